"""The diagonal Fisher information of a trained model on a site's data (for Fisher merging).

Matena & Raffel, "Merging Models with Fisher-Weighted Averaging", NeurIPS 2022, and
Jhunjhunwala et al., "FedFisher", AISTATS 2024: for each parameter, the mean over the site's
samples of ``E_{y ~ p(y|x)} (d log p(y|x) / d theta)^2`` — the true Fisher, with labels
drawn (seeded) from the model's own prediction, not the "empirical" Fisher of the given
labels. Because ``E_y[d log p(y|x)/d theta] = 0`` under the model's own distribution, the
cross terms of a small batch's summed gradient vanish in expectation, so
``(sum_i g_i)^2 / B`` over batches of B samples is an unbiased estimate of the mean
``g_i^2`` at the cost of one backward pass per batch instead of one per sample. The model
is evaluated in eval mode (no dropout; BatchNorm uses its running statistics).

The hub then merges each parameter elementwise as ``sum_k n_k F_k x_k / sum_k n_k F_k``
(``hub_kit.strategies.math.fisher_weighted_mean``): where a site's data pins a weight
down, its value counts more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from site_kit.data import Dataset
from site_kit.data.samples import Samples
from site_kit.data.stream import batches, in_order

FISHER_PREFIX = "fisher."


def diagonal_fisher(
    model: torch.nn.Module,
    data: Dataset | Samples,
    device: torch.device,
    seed: int,
    batch_size: int = 4,
    workers: int = 0,
) -> dict[str, torch.Tensor]:
    """Per-parameter diagonal Fisher (float32, same shapes), averaged over ``data``."""
    was_training = model.training
    model.eval()
    params = {k: v for k, v in model.named_parameters() if v.requires_grad}
    total = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in params.items()}
    generator = torch.Generator().manual_seed(seed)
    for cpu_x, _ in batches(data, in_order(len(data), batch_size), workers=workers):
        xb = cpu_x.to(device)
        log_probs = F.log_softmax(model(xb), dim=-1)
        with torch.no_grad():
            drawn = torch.multinomial(log_probs.exp().cpu(), 1, generator=generator)
        picked = log_probs.gather(1, drawn.to(device)).sum()
        grads = torch.autograd.grad(picked, list(params.values()))
        for name, g in zip(params, grads, strict=True):
            total[name] += g.detach().double().cpu().square()
    model.train(was_training)
    n = max(len(data), 1)
    return {k: (v / n).float() for k, v in total.items()}


def with_fisher(
    state: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The bundle's tensors: the model's state plus ``fisher.NAME`` for each parameter."""
    return {**state, **{FISHER_PREFIX + k: v for k, v in fisher.items()}}
