"""``dicom``: DICOM images read with pydicom, from a folder per class or a CSV manifest.

The data is a folder holding one sub-folder per class name (files ending ``.dcm`` or
``.dicom``, or with no suffix, as scanners write them), or a CSV manifest with a ``path``
column (relative to the CSV) and a ``label`` column. ``index`` reads only each file's
header (pydicom's ``stop_before_pixels``) and checks, without decoding, that its pixels
can be decoded here: the attributes an image needs, a photometric interpretation flsilo
reads, a decoder for its transfer syntax (a compressed syntax whose decoder is not
installed is a bad record naming the package to install), and, for uncompressed data,
that the file holds as many pixel bytes as its rows, columns, frames and bits need (a
truncated copy is a bad record).

``decode`` returns the pixels as the file holds them, in the file's physical units: the
modality rescale (slope and intercept) or modality LUT applied, as float32; a file without
one keeps its 8- or 16-bit integers (never squeezed to 8 bits). The file's VOI window
(WindowCenter/WindowWidth, the first pair where several are given; where only a VOI LUT
table is given, the range of values it maps) is reported for the plan's ``--window
file``; MONOCHROME1 data is marked for inversion; colour data (RGB, YBR converted to RGB,
PALETTE COLOR through its palette) is H x W x 3. Scaling, inversion and resizing are the
plan's preprocessing, not this module's.

A multi-frame file is sampled by the plan's video rule: ``--frames-per-clip N`` takes N
frames spread evenly over the file, ``--frame-rate FPS`` takes frames 1/FPS seconds apart
by the file's FrameTime; each sampled frame is a record ``frame=K`` (K counts from 1, as
DICOM's frame numbers do). A multi-frame file in a plan that sets neither is a bad record.
"""

from __future__ import annotations

import logging
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from site_kit.data import BadRecord, DataContext
from site_kit.data import manifest as csv_manifest
from site_kit.data.imagefolder import check_shape
from site_kit.data.records import Identify, RawImage, Record
from site_kit.data.sampling import rule, spread

KIND = "image"
CHECK_ON_INDEX = False
"""``index`` checks every file's header instead of decoding its pixels (see above)."""

SUFFIXES = {".dcm", ".dicom", ""}
PHOTOMETRIC = {
    "MONOCHROME1",
    "MONOCHROME2",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
    "PALETTE COLOR",
}
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}
_READ_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OSError,
    EOFError,
    RuntimeError,
    NotImplementedError,
    struct.error,
)
"""What pydicom and its decoders raise on a damaged or odd file."""
MANIFEST_HINT = "a DICOM manifest has a 'path' column (relative to the CSV) and a 'label' column"


_QUIET: list[bool] = []
"""Set once pydicom's logger is quietened (decode runs for every sample)."""


def require_pydicom() -> Any:
    """The pydicom module, or a usage error saying how to install it."""
    try:
        import pydicom
        import pydicom.pixels  # the decoders live here
    except ImportError as exc:
        raise UsageError(
            "reading DICOM data needs pydicom, which is not installed",
            code=Code.DICOM_EXTRA,
        ) from exc
    if not _QUIET:  # pydicom logs what it tolerates in odd files; a bad one is a bad record
        logging.getLogger("pydicom").setLevel(logging.ERROR)
        _QUIET.append(True)
    return pydicom


@dataclass(frozen=True)
class Header:
    """What ``index`` learns from a file's header."""

    frames: int
    frame_time_ms: float
    """FrameTime (0018,1063) in milliseconds, 0 where the file gives none."""


def index(path: Path, ctx: DataContext, identify: Identify) -> Iterator[Record | BadRecord]:
    """Class folders in name order (files in name order), or the manifest's rows in order."""
    ctx.refuse_task(path, "dicom")
    require_pydicom()
    check_shape(path, ctx.input_shape, "DICOM data")
    csv_manifest.check_source(path, "DICOM", MANIFEST_HINT)
    for item in _folder(path, ctx) if path.is_dir() else _manifest(path, ctx):
        if isinstance(item, BadRecord):
            yield item
            continue
        where, file, target = item
        try:
            identity = identify(file)
        except OSError as exc:
            yield BadRecord(where, f"{_named(where, file, ctx)}cannot read file ({exc.strerror})")
            continue
        try:
            header = read_header(file)
            frames = sampled_frames(header, ctx.preprocess)
        except BadRecord as exc:
            yield BadRecord(where, _named(where, file, ctx) + exc.why)
            continue
        for frame in frames:
            yield identity.record(target, f"frame={frame + 1}" if frame >= 0 else "")


def _named(where: str, file: Path, ctx: DataContext) -> str:
    """``FILE: `` before a reason about a manifest row's file (a folder's is named already)."""
    return "" if where == str(file) else f"{file.relative_to(ctx.root).as_posix()}: "


def _folder(path: Path, ctx: DataContext) -> Iterator[tuple[str, Path, int] | BadRecord]:
    classes = ctx.class_index
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in classes:
            yield BadRecord(
                str(folder),
                f"folder {folder.name!r} is not a class of this federation "
                f"({', '.join(ctx.classes)})",
            )
            continue
        for file in sorted(folder.iterdir()):
            if file.name.startswith(".") or file.suffix.lower() not in SUFFIXES:
                continue
            if file.is_file():
                yield str(file), file, classes[folder.name]


def _manifest(path: Path, ctx: DataContext) -> Iterator[tuple[str, Path, int] | BadRecord]:
    classes = ctx.class_index
    for where, row in csv_manifest.rows(path, ("path", "label"), MANIFEST_HINT):
        if not row:
            yield BadRecord(where, "the row has another number of cells than the header")
        elif row["label"] not in classes:
            yield BadRecord(
                where,
                f"label {row['label']!r} is not a class of this federation "
                f"({', '.join(ctx.classes)})",
            )
        else:
            file = csv_manifest.resolve(ctx.root, row["path"], where)
            yield file if isinstance(file, BadRecord) else (where, file, classes[row["label"]])


def read_header(file: Path) -> Header:
    """The file's header, checked so that its pixels can be decoded here (or BadRecord)."""
    pydicom = require_pydicom()
    where = str(file)
    try:
        with file.open("rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(fh, stop_before_pixels=True)
            except pydicom.errors.InvalidDicomError as exc:
                raise BadRecord(
                    where, "not a DICOM file (no 'DICM' marker after the 128-byte preamble)"
                ) from exc
            syntax = ds.file_meta.get("TransferSyntaxUID")
            if syntax is None:
                raise BadRecord(
                    where, "the file meta names no transfer syntax (truncated or damaged?)"
                )
            _check_image(ds, syntax, where)
            if not syntax.is_deflated:
                _check_pixel_bytes(ds, syntax, fh, file.stat().st_size, where)
    except _READ_ERRORS as exc:
        raise BadRecord(where, f"cannot read the DICOM header ({_brief(exc)})") from exc
    frame_time = ds.get("FrameTime")
    try:
        frame_time_ms = float(frame_time) if frame_time not in (None, "") else 0.0
    except (TypeError, ValueError):
        frame_time_ms = 0.0
    return Header(frames=_frames(ds), frame_time_ms=max(frame_time_ms, 0.0))


def _frames(ds: Any) -> int:
    value = ds.get("NumberOfFrames")
    try:
        return max(int(value), 1) if value not in (None, "") else 1
    except (TypeError, ValueError):
        return 1


def _check_image(ds: Any, syntax: Any, where: str) -> None:
    for name in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel"):
        value = ds.get(name)
        if not isinstance(value, int) or value <= 0:
            raise BadRecord(where, f"no usable {name} in the header (not an image?)")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in PHOTOMETRIC:
        raise BadRecord(
            where,
            f"photometric interpretation {photometric or '(none)'!r} is not one flsilo reads "
            f"({', '.join(sorted(PHOTOMETRIC))})",
        )
    if syntax.is_compressed:
        reason = missing_decoder(syntax, int(ds.get("BitsStored") or ds.BitsAllocated))
        if reason:
            raise BadRecord(where, reason)


def missing_decoder(syntax: Any, bits_stored: int = 8) -> str:
    """Why pixels in ``syntax`` cannot be decoded here (naming what to install), or ''."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGExtended12Bit

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"transfer syntax {syntax} ({syntax.name}) is not one pydicom can decode"
    pillow_only = set(decoder.available_plugins) <= {"pillow"}
    if decoder.is_available and not (
        syntax == JPEGExtended12Bit and bits_stored > 8 and pillow_only
    ):  # Pillow decodes 8-bit JPEG Extended only
        return ""
    options = [f"pip install {p}" for p in map(_pip_names, decoder.missing_dependencies) if p]
    return f"transfer syntax {syntax.name} ({syntax}) needs a decoder that is not installed: " + (
        ", or ".join(options) or "a pydicom pixel data plug-in"
    )


def _pip_names(dependency: str) -> str:
    """pydicom's ``'gdcm - requires gdcm>=3.0.10'`` as ``python-gdcm`` (what pip installs).

    ``'pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1'`` gives
    ``pylibjpeg pylibjpeg-libjpeg``.
    """
    _, _, needs = dependency.partition("requires ")
    names = []
    for part in needs.split(" and "):
        package = part.strip().split(">")[0].split("=")[0].split("<")[0].strip()
        if package and package != "numpy":
            names.append("python-gdcm" if package == "gdcm" else package)
    return " ".join(names)


def _check_pixel_bytes(ds: Any, syntax: Any, fh: Any, file_size: int, where: str) -> None:
    """The pixel data element is there and, uncompressed, holds as many bytes as needed."""
    start = fh.tell()  # dcmread stopped in front of the pixel data element
    head = fh.read(12)
    if len(head) < 8:
        raise BadRecord(where, "the file holds no pixel data (truncated or damaged?)")
    order = "<" if syntax.is_little_endian else ">"
    group, element = struct.unpack(order + "HH", head[:4])
    if (group, element) not in _PIXEL_TAGS:
        raise BadRecord(where, "the file holds no pixel data")
    if syntax.is_implicit_VR:
        length, skip = struct.unpack(order + "I", head[4:8])[0], 8
    elif head[4:6] in _LONG_VRS:
        if len(head) < 12:
            raise BadRecord(where, "the file is truncated in its pixel data element")
        length, skip = struct.unpack(order + "I", head[8:12])[0], 12
    else:
        length, skip = struct.unpack(order + "H", head[6:8])[0], 8
    if length == 0xFFFFFFFF:  # encapsulated (compressed) frames: the decoder checks them
        return
    follows = file_size - start - skip
    if follows < length:
        raise BadRecord(
            where,
            f"the file is truncated: its pixel data declares {length} bytes, {follows} follow",
        )
    needed = _native_bytes(ds)
    if syntax.is_compressed or length >= needed:
        return
    raise BadRecord(
        where,
        f"the pixel data holds {length} bytes; {ds.Rows} x {ds.Columns} pixels x "
        f"{ds.SamplesPerPixel} samples x {_frames(ds)} frames at {ds.BitsAllocated} bits "
        f"need {needed}",
    )


def _native_bytes(ds: Any) -> int:
    samples = ds.SamplesPerPixel
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        samples = 2  # two samples per pixel on average: chroma shared by pixel pairs
    bits = ds.Rows * ds.Columns * samples * _frames(ds) * ds.BitsAllocated
    return int((bits + 7) // 8)


def sampled_frames(header: Header, preprocess: Any) -> list[int]:
    """0-based frames to sample (``[-1]``: the file is one image), or BadRecord."""
    if header.frames == 1:
        return [-1]
    frame_rate, per_clip = rule(preprocess)
    if per_clip > 0:
        return spread(0, header.frames, per_clip)
    if frame_rate > 0:
        if header.frame_time_ms <= 0:
            raise BadRecord(
                "",
                f"a multi-frame file ({header.frames} frames) without a FrameTime cannot be "
                "sampled at the plan's --frame-rate",
            )
        step = max(1000.0 / (frame_rate * header.frame_time_ms), 1.0)  # frames apart
        out: list[int] = []
        k = 0
        while (frame := int(k * step + 1e-9)) < header.frames:
            out.append(frame)
            k += 1
        return out
    raise BadRecord(
        "",
        f"a multi-frame file ({header.frames} frames), and the plan sets no frame sampling "
        "(the hub's --frames-per-clip N or --frame-rate FPS)",
    )


def decode(record: Record, ctx: DataContext) -> RawImage:
    """One record's pixels in the file's physical units (see the module's docstring)."""
    pydicom = require_pydicom()
    from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

    file = ctx.root / record.source
    where = str(file) + (f" @ {record.frame}" if record.frame else "")
    frame = _frame(record.frame, where)
    try:
        with file.open("rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if frame is None:  # one image: read the file whole, as pydicom does best
                ds = pydicom.dcmread(fh)
                pixels = ds.pixel_array
            else:  # one frame of many: decode only that frame, from the file
                ds = pydicom.dcmread(fh, stop_before_pixels=True)
                fh.seek(0)
                deflated = ds.file_meta.get("TransferSyntaxUID", pydicom.uid.UID("")).is_deflated
                pixels = pixel_array(pydicom.dcmread(fh) if deflated else fh, index=frame)
            photometric = str(ds.get("PhotometricInterpretation", "")).strip()
            if photometric == "PALETTE COLOR":
                pixels = apply_color_lut(pixels, ds)
            elif pixels.ndim == 2:
                pixels = _modality(pixels, ds, apply_modality_lut)
    except pydicom.errors.InvalidDicomError as exc:
        raise BadRecord(where, "not a DICOM file") from exc
    except _READ_ERRORS as exc:
        raise BadRecord(where, f"cannot decode the pixel data ({_brief(exc)})") from exc
    if pixels.dtype not in (np.uint8, np.uint16, np.float32):
        pixels = pixels.astype(np.float32)  # signed, 32-bit or 1-bit data: values kept
    if pixels.ndim not in (2, 3):
        raise BadRecord(where, f"decoded pixels of shape {pixels.shape} are not one image")
    return RawImage(
        np.ascontiguousarray(pixels),
        window=file_window(ds),
        invert=photometric == "MONOCHROME1",
        provenance=record.source + (f" frame {frame + 1}" if frame is not None else ""),
    )


def _frame(text: str, where: str) -> int | None:
    if not text:
        return None
    if not text.startswith("frame=") or not text[6:].isdigit() or int(text[6:]) < 1:
        raise BadRecord(where, f"{text!r} is not a DICOM frame (frame=K, K from 1)")
    return int(text[6:]) - 1


def _modality(pixels: np.ndarray, ds: Any, apply_modality_lut: Any) -> np.ndarray:
    """Stored values in physical units: the rescale (in float32) or the modality LUT."""
    if "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
    if "RescaleSlope" not in ds and "RescaleIntercept" not in ds:
        return pixels
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    out = pixels.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def file_window(ds: Any) -> tuple[float, float] | None:
    """The file's VOI window as (centre, width), or None where it has none."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        return center, width
    voi = ds.get("VOILUTSequence")
    if voi:  # a LUT table: the range of stored values it maps
        try:
            entries, first, _bits = (int(v) for v in voi[0].LUTDescriptor)
        except (AttributeError, TypeError, ValueError):
            return None
        entries = entries or 65536
        return first + entries / 2, float(entries)
    return None


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str | int | float):  # multi-valued: the first is the default
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _brief(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
