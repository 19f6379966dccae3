"""Training follows the plan: every optimizer learns, warmup ramps, FedProx pulls toward the start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flsilo.format.manifest import Plan
from flsilo.models.registry import build_model
from site_kit.data import Dataset
from site_kit.evaluation import evaluate
from site_kit.training import make_optimizer, make_scheduler, train

CPU = torch.device("cpu")


def blobs(n: int = 300) -> Dataset:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = (rng.normal(size=(n, 4)) + np.eye(3, 4)[y] * 3).astype(np.float32)
    return Dataset(x, y.astype(np.int64))


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("adam", 0.01), ("adamw", 0.01)])
def test_every_optimizer_learns(optimizer: str, lr: float) -> None:
    data = blobs()
    torch.manual_seed(0)
    model = build_model("logreg", (4,), 3)
    before = evaluate(model, data, 3, CPU).loss
    train(
        model,
        data,
        Plan(local_epochs=5, batch_size=16, optimizer=optimizer, lr=lr, nesterov=True),
        seed=1,
        device=CPU,
    )
    after = evaluate(model, data, 3, CPU)
    assert after.loss < before and after.accuracy > 0.9


def test_same_seed_same_weights_and_other_seed_differs() -> None:
    data = blobs()

    def weights(seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = build_model("mlp:hidden=8", (4,), 3)
        train(model, data, Plan(local_epochs=2, batch_size=8), seed=seed, device=CPU)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(weights(3), weights(3))
    assert not torch.equal(weights(3), weights(4))


def test_warmup_ramps_the_learning_rate() -> None:
    model = build_model("logreg", (4,), 3)
    plan = Plan(local_epochs=1, batch_size=8, lr=0.1, warmup_steps=4)
    opt = make_optimizer(list(model.parameters()), plan)
    sched = make_scheduler(opt, plan)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_fedprox_keeps_weights_closer_to_the_global_model() -> None:
    data = blobs()

    def drift(mu: float) -> float:
        torch.manual_seed(0)
        model = build_model("logreg", (4,), 3)
        start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        train(
            model,
            data,
            Plan(local_epochs=5, batch_size=16, lr=0.1, fedprox_mu=mu),
            seed=1,
            device=CPU,
        )
        return float((torch.cat([p.detach().flatten() for p in model.parameters()]) - start).norm())

    assert drift(1.0) < 0.8 * drift(0.0)
