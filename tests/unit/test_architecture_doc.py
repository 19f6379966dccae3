"""docs/explanation/architecture.md is the module map: it names every module and package."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "explanation" / "architecture.md"


def test_the_module_map_names_every_module_and_package() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = []
    for layer in ("flsilo", "sim_kit", "site_kit", "hub_kit"):
        for path in sorted((ROOT / layer).iterdir()):
            if path.suffix == ".py" and not path.name.startswith("__"):
                named = f"`{path.stem}`" in text
            elif path.is_dir() and (path / "__init__.py").is_file():
                named = f"`{path.name}/`" in text or f"{layer}.{path.name}" in text
            else:
                continue
            if not named:
                missing.append(f"{layer}/{path.name}")
    assert not missing, (
        f"{', '.join(missing)} not in {DOC.relative_to(ROOT)}: add each to its layer's "
        "paragraph with what it is for (`name` for a module, `name/` for a package)"
    )
