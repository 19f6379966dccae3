"""The auditor guide's stock-tools recipe (ssh-keygen + coreutils) runs, and catches tampering."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import Federation, fingerprint, needs_ssh_keygen

DOC = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "auditor.md"


def recipe() -> str:
    text = DOC.read_text()
    match = re.search(r"<!-- recipe: auditor-stock-tools -->\n```bash\n(.*?)```", text, re.S)
    assert match, "recipe block missing from docs/how-to/auditor.md"
    return match.group(1)  # exactly as an auditor copies it: no added set -e


def run_recipe(
    fed: Federation, path: str = "", hub_fingerprint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The recipe with the hub key's fingerprint confirmed out of band (the key the test made)."""
    env = {
        "PATH": f"{path}/usr/bin:/bin:/usr/local/bin",
        "HUB": str(fed.hub),
        "HUB_FINGERPRINT": hub_fingerprint or fingerprint(fed.keys / "hub.pub"),
        "BUNDLE": str(fed.hub / "rounds" / "0000" / "fed-r0000-site-a.safetensors"),
        "SITE": "site-a",
        "PACKAGE": str(fed.hub / "packages" / "fed-r0001.safetensors"),
    }
    return subprocess.run(
        ["bash", "-c", recipe()], env=env, capture_output=True, text=True, check=False
    )


@needs_ssh_keygen
def test_stock_tools_recipe(federation: Federation, cli) -> None:
    federation.carry()
    assert cli("aggregate", federation.hub).code == 0
    ok = run_recipe(federation)
    assert ok.returncode == 0, ok.stderr
    assert "was accepted by the hub" in ok.stdout and "lists bundle" in ok.stdout
    assert ok.stdout.rstrip().endswith("PASS")
    bundle = federation.hub / "rounds" / "0000" / "fed-r0000-site-a.safetensors"
    shutil.copy(
        federation.hub / "rounds" / "0000" / "fed-r0000-site-b.safetensors.sig", f"{bundle}.sig"
    )
    bad = run_recipe(federation)
    assert bad.returncode != 0 and bad.stdout.rstrip().endswith("FAIL")


@needs_ssh_keygen
def test_stock_tools_recipe_catches_a_changed_archive_and_log(federation: Federation, cli) -> None:
    federation.carry()
    assert cli("aggregate", federation.hub).code == 0
    sums = federation.hub / "rounds" / "0000" / "SHA256SUMS"
    saved = sums.read_text()
    sums.write_text(saved.replace("site-b.safetensors\n", "site-b.safetensors\n", 1)[:-2] + "x\n")
    assert run_recipe(federation).stdout.rstrip().endswith("FAIL")
    sums.write_text(saved)
    log = federation.hub / "events.jsonl"
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines()[:-1]))
    assert run_recipe(federation).stdout.rstrip().endswith("FAIL")
