"""docs/explanation/architecture.md is the module map: it names every module and package,
and every module of the core's subpackages (format/, signing/, ...), each in its own
layer's section (a hub-kit module named only in the site kit's paragraph is missing)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "explanation" / "architecture.md"
# flsilo's subpackages the map names whole, not module by module
WHOLE = {"cli", "models", "tasks"}


def _entries(layer: str) -> list[Path]:
    entries = []
    for path in sorted((ROOT / layer).iterdir()):
        entries.append(path)
        if layer == "flsilo" and path.is_dir() and path.name not in WHOLE:
            entries += sorted(path.glob("*.py"))
    return entries


def _section(text: str, layer: str) -> str:
    """The layer's section: from its heading (``## The hub kit (`hub_kit/`)``) to the next;
    the core's also takes the layer diagram above it (``flsilo.cli``)."""
    start = text.index(f"(`{layer}/`)")
    end = text.find("\n## ", start)
    return text[: end if end >= 0 else None] if layer == "flsilo" else text[start:end]


def test_the_module_map_names_every_module_and_package() -> None:
    doc = DOC.read_text(encoding="utf-8")
    missing = []
    for layer in ("flsilo", "sim_kit", "site_kit", "hub_kit"):
        text = _section(doc, layer)
        for path in _entries(layer):
            if path.suffix == ".py" and not path.name.startswith("__"):
                named = f"`{path.stem}`" in text
            elif path.is_dir() and (path / "__init__.py").is_file():
                named = f"`{path.name}/`" in text or f"{layer}.{path.name}" in text
            else:
                continue
            if not named:
                missing.append(path.relative_to(ROOT).as_posix())
    assert not missing, (
        f"{', '.join(missing)} not in {DOC.relative_to(ROOT)}: add each to its layer's "
        "section with what it is for (`name` for a module, `name/` for a package)"
    )
