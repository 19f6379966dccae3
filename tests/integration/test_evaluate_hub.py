"""``flsilo evaluate PACKAGE --hub HUB_DIR``: the hub checks a package on its own data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.conftest import Federation, digits_npz, tree_digest


def test_the_hub_evaluates_with_its_own_trust(federation: Federation, cli, tmp_path: Path) -> None:
    package = federation.hub / "packages" / "fed-r0000.safetensors"
    before = tree_digest(federation.hub)
    result = cli(
        "evaluate", package, "--data", federation.data["site-b"], "--hub", federation.hub, "--json"
    )
    assert result.code == 0, result.err
    assert json.loads(result.out)["samples"] == 200
    # a site's bundle is judged by the same trust (the enrolled site keys): the trust, not
    # the figures, is checked, on a few records
    few = digits_npz(tmp_path / "few.npz", np.arange(1700, 1740))
    bundle = cli("evaluate", federation.bundles["site-a"], "--data", few, "--hub", federation.hub)
    assert bundle.code == 0, bundle.err
    assert tree_digest(federation.hub) == before


def test_an_edited_allowed_signers_is_refused(federation: Federation, cli) -> None:
    signers = federation.hub / "allowed_signers"
    signers.write_text(signers.read_text() + signers.read_text().splitlines()[-1] + "\n")
    result = cli(
        "evaluate", federation.hub / "packages" / "fed-r0000.safetensors",
        "--data", federation.data["site-a"], "--hub", federation.hub,
    )  # fmt: skip
    assert result.code == 3 and "allowed_signers" in result.err


def test_one_source_of_trust_at_a_time(federation: Federation, cli) -> None:
    result = cli(
        "evaluate", federation.hub / "packages" / "fed-r0000.safetensors",
        "--data", federation.data["site-a"], "--hub", federation.hub,
        "--site", federation.sites["site-a"],
    )  # fmt: skip
    assert result.code == 2 and "--hub" in result.err
