"""What a data adapter hands on: indexed records and the raw pixels decoded from one.

Every adapter splits its work in two, so that memory never grows with the number of
records: ``index`` walks the data once and yields one small ``Record`` per sample (or a
``BadRecord``), and ``decode`` turns one record into a ``RawImage`` (or raises
``BadRecord``) when a batch needs it. The one preprocessing function built from the plan
(``site_kit.preprocess``) then turns a ``RawImage`` into the model's input; adapters never
resize, scale or normalise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Record:
    """One sample in the site's index: where its bytes are, which part of them, its target.

    ``source`` is the file's path relative to the data root (POSIX separators), so an index
    moves with its folder. ``size``, ``mtime_ns`` and ``digest`` (sha256 of the file's
    bytes, hex) identify the bytes the sample came from; a refreshed index re-hashes a file
    only when its size or mtime changed. ``frame`` selects a part of a file that holds
    several samples: a video's timestamp in seconds (``"t=12.480"``), a multi-frame DICOM
    file's frame number (``"frame=3"``), a table's row (``"row=17"``); empty for a file
    that is one sample. ``target`` is the class index (classify; -1 where a task has none)
    and ``label`` the task's canonical text of the target (``flsilo.tasks.base.Target``;
    empty for classify).
    """

    source: str
    target: int
    size: int
    mtime_ns: int
    digest: str
    frame: str = ""
    label: str = ""


@dataclass(frozen=True)
class RawImage:
    """Pixels as the file holds them, before the plan's preprocessing.

    ``pixels`` is H x W (one channel) or H x W x C, of dtype uint8, uint16 or float32
    (float32 for DICOM data after the modality rescale, in the file's physical units).
    ``window`` is the file's own display window (centre, width) where it has one (DICOM
    VOI); ``invert`` is set for data displayed inverted (DICOM MONOCHROME1);
    ``provenance`` says where the pixels came from for people (``clip.mp4 @ 12.48 s``).
    """

    pixels: np.ndarray
    window: tuple[float, float] | None = None
    invert: bool = False
    provenance: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) as stored, before any resize."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


@dataclass(frozen=True)
class FileIdentity:
    """A file as the index knows it: path relative to the data root, size, mtime, sha256."""

    source: str
    size: int
    mtime_ns: int
    digest: str

    def record(self, target: int, frame: str = "", label: str = "") -> Record:
        return Record(self.source, target, self.size, self.mtime_ns, self.digest, frame, label)


Identify = Callable[[Path], FileIdentity]
"""What an adapter's ``index`` calls for each file it yields records of (see site_kit.data)."""
