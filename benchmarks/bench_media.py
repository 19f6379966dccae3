"""DICOM and video reading: flsilo's index checks and decodes against the libraries' own.

Usage: python benchmarks/bench_media.py [--files 300] [--seconds 60] [--repeats 3]

DICOM: writes FILES 512x512 16-bit MONOCHROME2 files with a rescale and a window (about
512 KB each), then times, per file, flsilo's index check (``dicom.read_header``: header
only, pixel bytes counted, not read) against pydicom's ``dcmread`` of the whole file, and
flsilo's decode (``dicom.decode``: the pixels rescaled to float32, the window read) against
pydicom's ``dcmread(f).pixel_array``.

Video: encodes SECONDS of 640x360 H.264 at 25 frames/s with a keyframe every 2 s, then
times flsilo's decode of the samples a plan of ``--frame-rate 1`` takes (one seek and a
forward decode each) against decoding every frame of the clip in order with PyAV (the
cost of reading the same samples by a sequential pass).

Each timing is the best of REPEATS runs (the machine may be shared).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from site_kit.data import DataContext, dicom, video
from site_kit.data.records import FileIdentity, Record


def best(repeats: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def write_dicoms(root: Path, count: int) -> list[Path]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    files = []
    for k in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = [40, 400], [400, 1500]
        ds.PixelData = rng.integers(0, 4096, (512, 512), dtype=np.uint16).tobytes()
        path = root / "normal" / f"IM{k:05d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def bench_dicom(root: Path, count: int, repeats: int) -> None:
    import pydicom

    files = write_dicoms(root, count)
    ctx = DataContext(root, ("normal",), (1, 224, 224))
    records = [Record(f.relative_to(root).as_posix(), 0, 0, 0, "") for f in files]

    def full_read() -> None:
        for f in files:
            pydicom.dcmread(f)

    def headers() -> None:
        for f in files:
            dicom.read_header(f)

    def pixels() -> None:
        for f in files:
            _ = pydicom.dcmread(f).pixel_array

    def decodes() -> None:
        for r in records:
            dicom.decode(r, ctx)

    per = 1000 / count
    rows = [
        ("index check (header only)", best(repeats, headers), "pydicom dcmread, whole file",
         best(repeats, full_read)),
        ("decode (rescaled float32 + window)", best(repeats, decodes),
         "pydicom dcmread + pixel_array", best(repeats, pixels)),
    ]  # fmt: skip
    print(f"DICOM, {count} files of 512x512 16-bit:")
    for name, ours, base_name, base in rows:
        print(f"  {name}: {ours * per:.2f} ms/file; {base_name}: {base * per:.2f} ms/file; "
              f"ratio {ours / base:.2f}")  # fmt: skip


def bench_video(root: Path, seconds: int, repeats: int) -> None:
    import av

    clip = root / "vehicle" / "cam.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(clip), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.codec_context.gop_size = 50
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
        for n in range(25 * seconds):
            frame = av.VideoFrame.from_ndarray(np.roll(base, n * 4, axis=1), format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, 25)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    plan = SimpleNamespace(frame_rate=1.0, frames_per_clip=0)
    ctx = DataContext(root, ("empty", "vehicle"), (3, 224, 224), preprocess=plan)

    def identify(f: Path) -> FileIdentity:
        return FileIdentity(f.relative_to(root).as_posix(), 0, 0, "")

    records = [r for r in video.index(root, ctx, identify) if isinstance(r, Record)]

    def samples() -> None:
        for r in records:
            video.decode(r, ctx)

    def sequential() -> None:
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            for k, frame in enumerate(container.decode(stream)):
                if k % 25 == 0:
                    frame.to_ndarray(format="rgb24")

    ours, base = best(repeats, samples), best(repeats, sequential)
    print(
        f"video, {seconds} s of 640x360 H.264 (keyframe every 2 s), {len(records)} samples at 1 FPS:"
    )
    print(f"  seek + decode per sample: {ours / len(records) * 1000:.1f} ms/sample "
          f"({ours:.2f} s); sequential decode of every frame: {base:.2f} s; ratio {ours / base:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_dicom(Path(tmp) / "dicom", args.files, args.repeats)
        bench_video(Path(tmp) / "video", args.seconds, args.repeats)


if __name__ == "__main__":
    main()
