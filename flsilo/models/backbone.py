"""``flsilo backbone import``: a published checkpoint becomes a start file for a model spec.

Run on the connected machine. The checkpoint is a safetensors file as timm, torchvision or
the Hugging Face hub publish them, or a PyTorch checkpoint read with
``torch.load(weights_only=True)`` (tensors only, no code; this module is the one place flsilo
reads one, and a test holds it there). Names are mapped (a ``module.``, ``model.`` or
``backbone.`` prefix is taken off), the old classifier is dropped, every other tensor must
match the spec's model in name and shape, and the start file holds the model's state dict
with the federation's fresh classifier. Its ``__metadata__`` carries a provenance record
(source digest, spec, library versions, the normalisation the backbone expects), written
beside it as ``START.provenance.json`` too; ``hub init --init-weights START`` reads it.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flsilo.format.artifact import sha256_file
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError

PROVENANCE_KEY = "flsilo.provenance"
PREFIXES = ("module.", "model.", "backbone.", "encoder.")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SUFFIX = ".provenance.json"


@dataclass(frozen=True)
class Imported:
    state: dict[str, Any]
    provenance: dict[str, Any]


def _bad(path: Path, why: str, hint: str, code: Code = Code.BAD_CHECKPOINT) -> MalformedInputError:
    return MalformedInputError(why, path=path, code=code, hint=hint)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's tensors by name: safetensors, or a weights-only torch checkpoint."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (OSError, SafetensorError) as exc:
            raise _bad(
                path, f"cannot read the safetensors file ({exc})", "check the download"
            ) from exc
    try:  # tensors only: weights_only refuses any pickled code
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, ...)
        raise _unreadable_checkpoint(path, exc) from exc
    for key in ("state_dict", "model", "model_state", "model_state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    tensors = (
        {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        if isinstance(loaded, dict)
        else {}
    )
    if not tensors:
        raise _bad(path, "the checkpoint holds no tensors by name", "give a state dict")
    return tensors


PICKLED_CLASS = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _unreadable_checkpoint(path: Path, exc: Exception) -> MalformedInputError:
    """One line for a ``.pth`` that ``torch.load(weights_only=True)`` refused: torch's own
    text is a page of advice (to load it with code after all) that is not flsilo's."""
    text = str(exc)
    pickled = PICKLED_CLASS.search(text)
    if pickled:
        return _bad(
            path,
            f"the checkpoint is a pickled Python object ({pickled.group(1)}), not weights "
            "alone: loading it would run its code, which flsilo never does",
            "on the connected machine, save its weights alone with its own library "
            "(torch.save(model.state_dict(), 'weights.pth'), or a .safetensors file) and "
            "import that",
        )
    first = " ".join(text.split(".")[0].split())[:160]
    return _bad(
        path,
        f"not a readable safetensors file or weights-only PyTorch checkpoint ({first})",
        "the file may be damaged or cut short: download it again and compare its sha256 "
        "with the publisher's; publishers' .safetensors files are safest",
    )


def _strip(names: list[str], wanted: set[str]) -> dict[str, str]:
    """Map checkpoint names to model names, taking off the prefix that matches best."""
    best: dict[str, str] = {n: n for n in names}
    score = len(wanted & set(best.values()))
    for prefix in PREFIXES:
        mapped = {n: n[len(prefix) :] if n.startswith(prefix) else n for n in names}
        hits = len(wanted & set(mapped.values()))
        if hits > score:
            best, score = mapped, hits
    return best


def _classifier_prefixes(model: Any, head: str) -> tuple[str, ...]:
    """State-dict prefixes of classifiers the publisher may have shipped (dropped)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    named = cfg.get("classifier")
    names = {head, *(named if isinstance(named, tuple | list) else [named] if named else [])}
    return tuple(f"{n}." for n in sorted(names) if n)


def map_state(path: Path, model: Any, tensors: dict[str, Any], spec: str) -> tuple[dict, list]:
    """The model's state dict filled from ``tensors``; the dropped classifier names."""
    from flsilo.models.registry import head_module_name

    target = model.state_dict()
    head = head_module_name(model)
    drop = _classifier_prefixes(model, head)
    mapping = _strip(sorted(tensors), set(target))
    dropped = sorted(n for n, m in mapping.items() if m.startswith(drop))
    used = {m: n for n, m in mapping.items() if n not in dropped}
    hint = f"export the checkpoint of exactly {spec} (same depth and width), or pick its spec"
    extra = sorted(m for m in used if m not in target)
    if extra:
        raise _bad(
            path,
            f"{len(extra)} tensor(s) the model lacks, e.g. {extra[0]!r}",
            hint,
            Code.WEIGHTS_MISMATCH,
        )
    state: dict[str, Any] = {}
    for name, value in target.items():
        if name.startswith(drop):
            state[name] = value  # the federation's fresh classifier
            continue
        source = used.get(name)
        if source is None:
            if name.endswith("num_batches_tracked"):  # older checkpoints omit the counter
                state[name] = value
                continue
            raise _bad(path, f"the checkpoint lacks {name!r}", hint, Code.WEIGHTS_MISMATCH)
        got = tensors[source]
        if tuple(got.shape) != tuple(value.shape):
            raise _bad(
                path,
                f"{name!r} has shape {tuple(got.shape)} in the checkpoint, "
                f"{tuple(value.shape)} in {spec}",
                _channels_hint(tuple(got.shape), tuple(value.shape)) or hint,
                Code.WEIGHTS_MISMATCH,
            )
        state[name] = got.to(value.dtype).contiguous()
    return state, dropped


def _channels_hint(got: tuple[int, ...], want: tuple[int, ...]) -> str | None:
    """The input layer of a checkpoint trained on another number of image channels (an
    ImageNet backbone for grey X-rays): the hint is the input shape, not another spec."""
    if len(got) != 4 or got[:1] + got[2:] != want[:1] + want[2:]:
        return None
    if {got[1], want[1]} != {1, 3}:
        return None
    return (
        f"the checkpoint was trained on {got[1]}-channel images: import it (and hub init) "
        f"with --input-shape {got[1]},H,W; the plan converts the sites' images to "
        f"{got[1]} channel(s) (grey repeated to RGB, RGB to grey)"
    )


def _normalisation(model: Any, spec: str, given: tuple | None) -> dict[str, list[float]] | None:
    """The mean and standard deviation the backbone was trained with, when known."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if given is not None:
        mean, std = given
    elif cfg.get("mean") is not None and cfg.get("std") is not None:
        mean, std = cfg["mean"], cfg["std"]
    elif spec.startswith("torchvision:"):
        mean, std = IMAGENET  # every torchvision classification weight uses it
    else:
        return None
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def _versions() -> dict[str, str]:
    out = {}
    for lib in ("flsilo", "torch", "torchvision", "timm", "safetensors"):
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def import_backbone(
    checkpoint: Path,
    spec: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    normalize: tuple | None = None,
) -> Imported:
    import torch

    from flsilo.models.registry import build_model, code_digest

    torch.manual_seed(0)
    model = build_model(spec, input_shape, num_classes)
    tensors = read_checkpoint(checkpoint)
    state, dropped = map_state(checkpoint, model, tensors, spec)
    provenance = {
        "source": {
            "file": checkpoint.name,
            "sha256": sha256_file(checkpoint, follow=True),
            "tensors": len(tensors),
        },
        "spec": spec,
        "code": code_digest(spec),
        "input_shape": list(input_shape),
        "classes": num_classes,
        "dropped": dropped,
        "libraries": _versions(),
        "normalize": _normalisation(model, spec, normalize),
    }
    return Imported(state=state, provenance=provenance)


def write_start(out: Path, imported: Imported) -> Path:
    """Write the start file (provenance in its metadata) and ``OUT.provenance.json``."""
    from safetensors.torch import save

    from flsilo.fs.atomic import write_bytes, write_text

    text = json.dumps(imported.provenance, sort_keys=True, separators=(",", ":"))
    write_bytes(out, save(imported.state, metadata={PROVENANCE_KEY: text}))
    record = out.with_name(out.name.removesuffix(".safetensors") + SUFFIX)
    write_text(record, json.dumps(imported.provenance, indent=2, sort_keys=True) + "\n")
    return record


def read_provenance(start: Path) -> dict[str, Any] | None:
    """The provenance a start file carries in its metadata, if ``backbone import`` wrote it."""
    from safetensors import safe_open

    try:
        with safe_open(str(start), framework="numpy") as handle:
            text = (handle.metadata() or {}).get(PROVENANCE_KEY)
    except Exception:  # an unreadable file is refused by the weight loader with its own code
        return None
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise _bad(
            start, "its provenance record is not JSON", "rerun flsilo backbone import"
        ) from exc
    if not isinstance(record, dict):
        raise _bad(start, "its provenance record is not an object", "rerun flsilo backbone import")
    return record


def with_start(config: Any, start: Path | None) -> tuple[Any, dict[str, Any] | None]:
    """The federation ``config`` with the normalisation a ``backbone import`` start file
    expects (when the plan gives none), and that file's provenance; unchanged without one."""
    import dataclasses

    from flsilo.runtime.errors import UsageError

    record = read_provenance(start) if start is not None else None
    if record is None:
        return config, None
    if record.get("spec") != config.model:
        raise UsageError(
            f"the start file was imported for model {record.get('spec')!r}, not {config.model!r}",
            path=start,
            code=Code.INIT_WEIGHTS,
            hint=f"give --model {record.get('spec')}, or import the checkpoint for this spec",
        )
    norm = record.get("normalize")
    pre = config.plan.preprocess
    if isinstance(norm, dict) and pre.normalize == "none":
        text = "/".join(",".join(repr(float(v)) for v in norm[k]) for k in ("mean", "std"))
        plan = dataclasses.replace(config.plan, preprocess=dataclasses.replace(pre, normalize=text))
        config = dataclasses.replace(config, plan=plan)
    return config, record
