"""The crnn model: shapes, torch's GRU and LSTM equations, per-sample gradients for DP-SGD."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flsilo.models.crnn import Direction
from flsilo.models.registry import build_model, head_tensor_names
from flsilo.runtime.errors import UsageError

SMALL = "crnn:channels=4x8,hidden=6"


@pytest.mark.parametrize(
    ("shape", "steps"), [((1, 32, 128), 32), ((1, 16, 64), 16), ((3, 20, 50), 13), ((1, 8, 8), 2)]
)
def test_outputs_one_row_of_logits_per_time_step(shape: tuple[int, ...], steps: int) -> None:
    model = build_model(SMALL, shape, 11)
    assert model(torch.zeros(3, *shape)).shape == (3, steps, 11)
    assert model.time_steps == steps  # type: ignore[union-attr]


def test_head_is_the_output_layer() -> None:
    assert head_tensor_names(build_model(SMALL, (1, 16, 64), 5)) == ("fc.weight", "fc.bias")


def test_no_running_statistics() -> None:
    state = build_model("crnn", (1, 32, 128), 34).state_dict()
    assert not [k for k in state if "running" in k or "num_batches" in k]


@pytest.mark.parametrize(("cell", "torch_rnn"), [("gru", nn.GRU), ("lstm", nn.LSTM)])
@pytest.mark.parametrize("reverse", [False, True])
def test_recurrence_is_torchs(cell: str, torch_rnn: type[nn.RNNBase], reverse: bool) -> None:
    torch.manual_seed(0)
    ours = Direction(cell, 10, 7, reverse=reverse)
    theirs = torch_rnn(10, 7, batch_first=True)
    with torch.no_grad():
        theirs.weight_ih_l0.copy_(ours.ih.weight)
        theirs.weight_hh_l0.copy_(ours.hh.weight)
        theirs.bias_ih_l0.copy_(ours.ih.bias)
        theirs.bias_hh_l0.copy_(ours.hh.bias)
    x = torch.randn(3, 5, 10)
    expected = theirs(x.flip(1))[0].flip(1) if reverse else theirs(x)[0]
    assert torch.allclose(ours(x), expected, atol=1e-6)


@pytest.mark.parametrize(
    "spec",
    ["crnn:cell=rnn", "crnn:norm=batch", "crnn:width_pools=4", "crnn:hidden=0", "crnn:depth=2"],
)
def test_bad_arguments_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        build_model(spec, (1, 32, 128), 10)


def test_shape_and_outputs_it_cannot_take() -> None:
    with pytest.raises(UsageError, match="needs the blank"):
        build_model("crnn", (1, 32, 128), 1)
    with pytest.raises(UsageError, match="C,H,W"):
        build_model("crnn", (13,), 5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_opacus_per_sample_gradients_are_each_samples_own(cell: str) -> None:
    """The recurrent layers reuse one nn.Linear at every step; Opacus must sum its per-step
    per-sample gradients, so each equals that sample's gradient taken alone."""
    opacus = pytest.importorskip("opacus", reason="DP tests need the 'dp' extra (Opacus)")
    from opacus.validators import ModuleValidator

    torch.manual_seed(1)
    model = build_model(f"{SMALL},cell={cell}", (1, 8, 24), 5)
    assert ModuleValidator.validate(model, strict=False) == []
    x = torch.randn(3, 1, 8, 24)
    wrapped = opacus.GradSampleModule(model, loss_reduction="sum")
    (wrapped(x) ** 2).sum().backward()
    per_sample = {n: p.grad_sample.clone() for n, p in model.named_parameters()}
    wrapped.remove_hooks()
    alone = build_model(f"{SMALL},cell={cell}", (1, 8, 24), 5)
    alone.load_state_dict(model.state_dict())
    for i in range(3):
        alone.zero_grad()
        (alone(x[i : i + 1]) ** 2).sum().backward()
        for name, param in alone.named_parameters():
            assert torch.allclose(per_sample[name][i], param.grad, atol=1e-5), name


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_dp_sgd_refuses_torchs_gru_and_takes_crnns() -> None:
    """Opacus has no per-sample gradients for nn.GRU: a DP site refuses it with a hint
    naming crnn, whose recurrence is nn.Linear and trains."""
    pytest.importorskip("opacus", reason="DP tests need the 'dp' extra (Opacus)")
    from flsilo.plans.plan import Plan
    from site_kit.privacy import DPRun, PrivateTraining, plan_spend

    plan = Plan(local_epochs=1, batch_size=4, dp_noise_multiplier=1.0, dp_budget=10.0)
    run_ = DPRun(plan_spend(plan, 8), b"\0" * 32)

    class TorchGRU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(4, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(x)[0]

    gru = TorchGRU()
    with pytest.raises(UsageError, match="cannot be trained with DP-SGD") as caught:
        PrivateTraining(gru, torch.optim.SGD(gru.parameters(), lr=0.1), plan, run_, 8,
                        torch.device("cpu"))  # fmt: skip
    assert caught.value.code == "dp-model" and "crnn" in (caught.value.hint or "")
    model = build_model(SMALL, (1, 8, 24), 5)
    private = PrivateTraining(model, torch.optim.SGD(model.parameters(), lr=0.1), plan, run_, 8,
                              torch.device("cpu"))  # fmt: skip
    private.close()
