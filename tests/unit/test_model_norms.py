"""Frozen BatchNorm keeps the package's running statistics while the site trains."""

from __future__ import annotations

import torch
from torch import nn

from flsilo.format.tensorsets import frozen_names
from flsilo.models.norms import frozen_batchnorms, hold_frozen_batchnorms, live_modules
from site_kit.training import freeze_parameters


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_frozen_batchnorm_stays_in_eval_mode_and_keeps_its_statistics() -> None:
    model = _model()
    frozen = freeze_parameters(model, ("0.*", "1.*"))
    assert "1.running_mean" in frozen and "1.num_batches_tracked" in frozen
    before = {k: v.clone() for k, v in model[1].state_dict().items()}
    model.train()
    assert model.training and model[0].training and not model[1].training
    x = torch.randn(16, 4) * 5 + 3
    model(x).sum().backward()
    after = model[1].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # it normalised with the running statistics, not the batch's: same as eval mode
    out_train = model[1](model[0](x))
    model.eval()
    assert torch.equal(out_train, model[1](model[0](x)))


def test_trainable_batchnorm_updates_its_statistics_as_before() -> None:
    model = _model()
    freeze_parameters(model, ("0.*",))
    model.train()
    assert model[1].training
    model(torch.randn(16, 4) + 3)
    assert int(model[1].num_batches_tracked) == 1
    assert not torch.equal(model[1].running_mean, torch.zeros(6))


def test_a_partly_frozen_batchnorm_is_not_held() -> None:
    model = _model()
    names = frozen_names(model.state_dict(), ("1.weight", "1.bias"))
    assert frozen_batchnorms(model, names) == []
    assert hold_frozen_batchnorms(model, names) == []
    everything = frozen_names(model.state_dict(), ("1.*",))
    assert frozen_batchnorms(model, everything) == ["1"]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in live_modules(model, everything))
    assert any(isinstance(m, nn.BatchNorm1d) for m in live_modules(model, names))


def test_a_held_model_survives_deepcopy() -> None:
    import copy

    model = _model()
    hold_frozen_batchnorms(model, frozen_names(model.state_dict(), ("1.*",)))
    clone = copy.deepcopy(model)
    clone.train()
    assert not clone[1].training and model[1] is not clone[1]
