"""DP-SGD for ``--task detect``: the summed loss is a sum of per-image losses, Opacus's
per-sample gradients of the built-in detector are each image's own, an empty Poisson batch
steps, and plain training keeps its loss to the bit."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from flsilo.models.registry import build_model
from flsilo.runtime.errors import UsageError
from flsilo.tasks import load_task

TASK = load_task("detect")
SPEC = "detector:width=4,groups=2"
SHAPE = (3, 32, 32)
# (class, x1, y1, x2, y2): two objects, none, one, three: each image has its own count
BOXES = [
    [[0, 0.1, 0.1, 0.5, 0.5], [2, 0.5, 0.5, 0.9, 0.8]],
    [],
    [[1, 0.2, 0.3, 0.6, 0.9]],
    [[0, 0.05, 0.6, 0.3, 0.95], [1, 0.4, 0.1, 0.7, 0.4], [2, 0.7, 0.6, 0.95, 0.9]],
]
# The mean loss and its gradients of the batch below (3 images, one torch thread as
# tests/conftest.py sets), digested as the code before DP-SGD for detection computed them:
# plain training keeps its bytes.
MEAN_LOSS_DIGEST = "0dc0bebedbc046770b35f0afebea657b173f8068bb402f82627c28c37b0d53ef"


def _batch(n: int = 4) -> tuple[torch.nn.Module, torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = build_model(SPEC, SHAPE, 3)
    x = torch.randn(n, *SHAPE)
    y = TASK.collate([np.array(b, dtype=np.float32).reshape(-1, 5) for b in BOXES[:n]])
    return model, x, y


def _opacus():  # type: ignore[no-untyped-def]
    return pytest.importorskip("opacus", reason="DP tests need the 'dp' extra (Opacus)")


def test_summed_loss_is_the_sum_of_single_image_losses() -> None:
    model, x, y = _batch()
    total = TASK.loss(model, x, y, "sum")
    alone = [TASK.loss(model, x[i : i + 1], [y[i]], "sum") for i in range(len(x))]
    assert torch.allclose(total, torch.stack(alone).sum(), rtol=1e-6, atol=0)
    # each image normalised by its own objects: the mean is not the summed loss over N
    assert torch.allclose(TASK.loss(model, x, y, "mean"), torch.stack(alone).mean(), rtol=1e-6)
    empty = TASK.loss(model, x[:0], TASK.collate([]), "sum")
    assert empty.requires_grad and float(empty.detach()) == 0.0


def test_plain_training_keeps_its_loss_to_the_bit() -> None:
    model, x, y = _batch(3)
    loss = TASK.loss(model, x, y, "mean")
    assert torch.equal(loss, model.detection_loss(x, y).mean())
    loss.backward()
    digest = hashlib.sha256(loss.detach().numpy().tobytes())
    for p in model.parameters():
        digest.update(p.grad.numpy().tobytes())
    assert digest.hexdigest() == MEAN_LOSS_DIGEST


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_opacus_per_sample_gradients_are_each_images_own() -> None:
    opacus = _opacus()
    from opacus.validators import ModuleValidator

    model, x, y = _batch()
    assert ModuleValidator.validate(model, strict=False) == []
    wrapped = opacus.GradSampleModule(model, loss_reduction="sum")
    TASK.loss(wrapped, x, y, "sum").backward()
    per_sample = {n: p.grad_sample.clone() for n, p in model.named_parameters()}
    wrapped.remove_hooks()
    alone = build_model(SPEC, SHAPE, 3)
    alone.load_state_dict(model.state_dict())
    for i in range(len(x)):
        alone.zero_grad()
        TASK.loss(alone, x[i : i + 1], [y[i]], "sum").backward()
        for name, param in alone.named_parameters():
            assert param.grad is not None
            scale = max(1.0, float(param.grad.abs().max()))
            assert torch.allclose(per_sample[name][i], param.grad, atol=1e-5 * scale), (i, name)
    # the images' gradients differ (no image's gradient is another's, or the batch's)
    head = per_sample["head.2.weight"].flatten(1)
    assert all(not torch.allclose(head[i], head[j]) for i in range(4) for j in range(i))


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_an_empty_poisson_batch_takes_a_noisy_step() -> None:
    """No image drawn: the step still adds noise (Opacus needs per-sample gradients, of
    zero samples, on every trained tensor)."""
    _opacus()
    from flsilo.plans.plan import Plan
    from site_kit.privacy import DPRun, PrivateTraining, plan_spend

    model, x, _ = _batch()
    plan = Plan(local_epochs=1, batch_size=4, dp_noise_multiplier=1.0, dp_budget=10.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    private = PrivateTraining(model, torch.optim.SGD(model.parameters(), lr=0.1), plan,
                              DPRun(plan_spend(plan, 8), b"\0" * 32), 8,
                              torch.device("cpu"))  # fmt: skip
    loss = TASK.loss(private.module, x[:0], TASK.collate([]), "sum")
    private.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    private.optimizer.step()
    private.close()
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)  # noise only, on every tensor


def test_the_built_in_detector_takes_dp_and_other_models_are_named() -> None:
    model, x, y = _batch(2)
    assert TASK.supports_dp and TASK.dp_problem(model) is None
    cnn = build_model("cnn", SHAPE, 3)
    with pytest.raises(UsageError, match="is not a detector"):
        TASK.loss(cnn, x, y, "sum")
