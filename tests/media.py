"""DICOM files and video clips written by the real libraries (pydicom, PyAV) for the tests.

Each writer skips the calling test, with the reason, when its extra is not installed.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_GREY = "1.2.840.10008.5.1.4.1.1.7.2"


def pydicom_or_skip() -> Any:
    return pytest.importorskip("pydicom", reason="the 'dicom' extra (pydicom) is not installed")


def av_or_skip() -> Any:
    return pytest.importorskip("av", reason="the 'video' extra (PyAV) is not installed")


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    syntax: str = "1.2.840.10008.1.2.1",  # explicit VR little endian
    frames: int = 1,
    signed: bool = False,
    compress: str = "",
    **attrs: Any,
) -> Path:
    """Write ``pixels`` (H x W, H x W x 3, or F x H x W with ``frames``) as a DICOM file.

    ``attrs`` become data elements (``RescaleSlope=2``, ``WindowCenter=[40, 400]``,
    ``FrameTime=40``); ``PixelData`` among them replaces the pixels' bytes. ``compress``
    names a transfer syntax pydicom encodes itself (RLE Lossless) to really compress with;
    ``syntax`` alone only labels the file (a compressed one gets a dummy encapsulated frame).
    """
    pydicom_or_skip()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MULTIFRAME_GREY if frames > 1 else SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    image = pixels if frames == 1 else pixels[0]
    ds.Rows, ds.Columns = int(image.shape[0]), int(image.shape[1])
    ds.SamplesPerPixel = 3 if image.ndim == 3 else 1
    if image.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    if meta.TransferSyntaxUID.is_compressed:
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        if "PixelData" not in attrs:  # a valid encapsulation of one (not really coded) frame
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([b"\xff\xd8" + bytes(64) + b"\xff\xd9"])
    if compress:
        ds.compress(compress)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def frame_colour(n: int) -> tuple[int, int, int]:
    """The colour of a test clip's frame ``n``: its number readable from the decoded pixels."""
    return (n % 16) * 16 + 8, (n // 16 % 16) * 16 + 8, 128


def frame_number(pixels: np.ndarray) -> int:
    """Which frame (0-255) ``frame_colour`` painted ``pixels`` with (lossy coding is fine)."""
    red, green = (float(pixels[..., c].mean()) for c in (0, 1))
    return int(red // 16) + 16 * int(green // 16)


def write_clip(
    path: Path,
    frames: int,
    *,
    fps: int = 25,
    size: tuple[int, int] = (48, 64),
    codec: str = "mpeg4",
    gop: int = 12,
    first: int = 0,
) -> Path:
    """Encode ``frames`` frames at ``fps``, frame n painted ``frame_colour(first + n)``."""
    av = av_or_skip()
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = Fraction(1, fps)
        if codec == "mpeg4":
            stream.codec_context.bit_rate = 2_000_000
        for n in range(frames):
            image = np.empty((height, width, 3), dtype=np.uint8)
            image[:] = frame_colour(first + n)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = n
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
