"""Building torchvision and timm models: no weights, the federation's classifier, its head."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vision
REASON = "runs in the vision tier, whose environment (constraints-vision.txt) has it"
torch = pytest.importorskip("torch")
pytest.importorskip("torchvision", reason=REASON)
pytest.importorskip("timm", reason=REASON)

from torch.nn.modules.batchnorm import _BatchNorm  # noqa: E402

from flsilo.models.registry import build_model, head_features, head_tensor_names  # noqa: E402
from flsilo.runtime.errors import UsageError  # noqa: E402


@pytest.mark.parametrize(
    ("spec", "head", "features"),
    [
        ("torchvision:mobilenet_v3_small", ("classifier.3.weight", "classifier.3.bias"), 1024),
        ("torchvision:resnet18", ("fc.weight", "fc.bias"), 512),
        ("timm:test_efficientnet", ("classifier.weight", "classifier.bias"), None),
        ("timm:test_vit:img_size=16", ("head.weight", "head.bias"), None),
    ],
)
def test_the_head_is_the_federations_classifier(spec, head, features) -> None:
    model = build_model(spec, (3, 16, 16), 7)
    assert head_tensor_names(model) == head
    assert model.state_dict()[head[0]].shape[0] == 7
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        got = head_features(model, x)
    assert got.shape[1] == (features or model.state_dict()[head[0]].shape[1])


def test_timm_adapts_to_the_channel_count_and_torchvision_says_it_cannot() -> None:
    assert build_model("timm:test_resnet", (1, 16, 16), 3)(torch.randn(2, 1, 16, 16)).shape == (
        2,
        3,
    )
    with pytest.raises(UsageError, match="3-channel images"):
        build_model("torchvision:resnet18", (1, 16, 16), 3)


@pytest.mark.parametrize("spec", ["torchvision:resnet18", "timm:test_efficientnet"])
def test_norm_group_leaves_no_batchnorm_and_keeps_timms_activations(spec) -> None:
    model = build_model(f"{spec}:norm=group,norm_groups=4", (3, 16, 16), 5)
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    groups = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert groups and all(m.num_groups <= 4 and m.num_channels % m.num_groups == 0 for m in groups)
    if spec.startswith("timm"):  # BatchNormAct2d became GroupNormAct with the same activation
        acts = [type(getattr(m, "act", None)).__name__ for m in groups]
        assert any(a not in ("Identity", "NoneType") for a in acts)
    model.train()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)


def test_bad_arguments_are_one_usage_error() -> None:
    with pytest.raises(UsageError, match="norm must be"):
        build_model("torchvision:resnet18:norm=layer", (3, 16, 16), 2)
    with pytest.raises(UsageError, match="cannot build it"):
        build_model("torchvision:resnet18:depth=3", (3, 16, 16), 2)
