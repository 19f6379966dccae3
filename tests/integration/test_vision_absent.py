"""Without the vision extra, a torchvision or timm spec is one line with the install hint."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import make_key


@pytest.mark.parametrize("library", ["torchvision", "timm"])
def test_hub_init_without_the_library_says_how_to_install_it(cli, tmp_path, library):
    if importlib.util.find_spec(library) is not None:
        pytest.skip(f"{library} is installed here (the vision tier tests the specs)")
    key = make_key(tmp_path / "hub-key")
    res = cli(
        "hub", "init", tmp_path / "hub", "--federation", "f", "--model", f"{library}:resnet18",
        "--classes", "a,b", "--input-shape", "3,16,16", "--key", key,
    )  # fmt: skip
    assert res.code == 2
    assert "error[bad-model-spec]" in res.err and f"{library} is not installed here" in res.err
    assert "flsilo[vision]" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "hub").exists()
