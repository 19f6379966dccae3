"""torchvision:NAME and timm:NAME specs: parsing, identities and version checks (no import)."""

from __future__ import annotations

import importlib.util

import pytest

from flsilo.models import vision
from flsilo.models.registry import code_mismatch, parse_spec
from flsilo.runtime.errors import UsageError

ABSENT = importlib.util.find_spec("torchvision") is None


def test_library_specs_parse_to_the_library_and_its_model_name() -> None:
    spec = parse_spec("torchvision:resnet18:norm=group,norm_groups=8")
    assert (spec.library, spec.module, spec.factory) == ("torchvision", "torchvision", "resnet18")
    assert spec.kwargs == {"norm": "group", "norm_groups": 8}
    timm = parse_spec("timm:vit_tiny_patch16_224:img_size=32")
    assert (timm.library, timm.factory, timm.kwargs) == (
        "timm",
        "vit_tiny_patch16_224",
        {"img_size": 32},
    )
    assert parse_spec("mlp:hidden=8").library == ""


@pytest.mark.parametrize("text", ["timm", "timm:", "torchvision::x=1", "timm:a:b:c"])
def test_a_library_spec_without_a_model_name_is_refused(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_spec(text)
    assert caught.value.code == "bad-model-spec"


def test_public_versions_ignore_the_local_build_label() -> None:
    assert vision.public_version("0.29.1+cpu") == vision.public_version("0.29.1") == "0.29.1"
    assert vision.public_version("0.29.1+cu130") == "0.29.1"
    assert vision.parse_identity("torchvision==0.29.1:resnet18") == (
        "torchvision",
        "0.29.1",
        "resnet18",
    )
    assert vision.parse_identity("a" * 64) is None
    assert vision.parse_identity("numpy==2.0:x") is None


@pytest.mark.skipif(not ABSENT, reason="torchvision is installed here")
def test_a_site_without_the_library_is_told_which_version_to_install() -> None:
    mismatch = code_mismatch("torchvision:resnet18", "torchvision==0.29.1:resnet18")
    assert mismatch is not None
    why, hint = mismatch
    assert "torchvision is not installed here" in why and "0.29.1" in why
    assert "install torchvision==0.29.1" in hint


@pytest.mark.vision
def test_the_installed_library_matches_its_own_identity_whatever_the_build_label() -> None:
    import torchvision

    public = vision.public_version(torchvision.__version__)
    assert code_mismatch("torchvision:resnet18", f"torchvision=={public}:resnet18") is None
    why, hint = code_mismatch("torchvision:resnet18", "torchvision==0.1.0:resnet18") or ("", "")
    assert f"torchvision {public} is installed here" in why and "0.1.0" in why
    assert "torchvision==0.1.0" in hint
    # the package's identity names another model: refused too
    assert code_mismatch("torchvision:resnet18", f"torchvision=={public}:resnet34") is not None
