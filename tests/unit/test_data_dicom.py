"""site_kit.data.dicom: DICOM files written with pydicom, indexed from headers, decoded raw."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from site_kit.data import BadRecord, DataContext
from site_kit.data.records import FileIdentity, Record
from tests.media import pydicom_or_skip, write_dicom

pydicom_or_skip()

from site_kit.data import dicom  # noqa: E402 - after the skip: it needs pydicom

CLASSES = ("normal", "effusion")
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"  # no decoder without pylibjpeg or python-gdcm
IMPLICIT_LE = "1.2.840.10008.1.2"


def no_jpeg_plugins() -> None:
    """Skip where a JPEG plug-in is installed: these tests need its absence."""
    from pydicom.pixels import get_decoder

    if get_decoder(JPEG_LOSSLESS).available_plugins:
        pytest.skip("a JPEG Lossless plug-in (pylibjpeg or python-gdcm) is installed here")


def context(root: Path, frames_per_clip: int = 0, frame_rate: float = 0.0) -> DataContext:
    plan = SimpleNamespace(frames_per_clip=frames_per_clip, frame_rate=frame_rate)
    return DataContext(root, CLASSES, (1, 8, 8), preprocess=plan)


def identify_under(root: Path):
    def identify(file: Path) -> FileIdentity:
        st = file.stat()
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        return FileIdentity(file.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns, digest)

    return identify


def walk(path: Path, ctx: DataContext) -> tuple[list[Record], list[BadRecord]]:
    good: list[Record] = []
    bad: list[BadRecord] = []
    for item in dicom.index(path, ctx, identify_under(ctx.root)):
        (bad if isinstance(item, BadRecord) else good).append(item)
    return good, bad


def grey16(value: int = 0) -> np.ndarray:
    return (np.arange(64, dtype=np.uint16).reshape(8, 8) * 100 + value).astype(np.uint16)


def test_folder_per_class_indexes_headers_and_decodes_16_bit_rescaled(tmp_path: Path) -> None:
    write_dicom(tmp_path / "normal" / "a.dcm", grey16(), RescaleSlope=2, RescaleIntercept=-1024,
                WindowCenter=[40, 400], WindowWidth=[400, 1500])  # fmt: skip
    write_dicom(tmp_path / "effusion" / "IM0001", grey16())  # no suffix, as scanners write
    (tmp_path / "effusion" / "notes.txt").write_text("not an image")
    ctx = context(tmp_path)
    good, bad = walk(tmp_path, ctx)
    assert bad == []
    assert [(r.source, r.target, r.frame) for r in good] == [
        ("effusion/IM0001", 1, ""),
        ("normal/a.dcm", 0, ""),
    ]
    assert good[1].digest == hashlib.sha256((tmp_path / "normal/a.dcm").read_bytes()).hexdigest()

    rescaled = dicom.decode(good[1], ctx)
    assert rescaled.pixels.dtype == np.float32
    np.testing.assert_array_equal(rescaled.pixels, grey16().astype(np.float32) * 2 - 1024)
    assert rescaled.window == (40.0, 400.0)  # the first of several windows
    assert rescaled.invert is False
    assert rescaled.provenance == "normal/a.dcm"

    raw = dicom.decode(good[0], ctx)
    assert raw.pixels.dtype == np.uint16  # 16 bits kept, not squeezed to 8
    np.testing.assert_array_equal(raw.pixels, grey16())
    assert raw.window is None


def test_monochrome1_8_bit_and_signed_data(tmp_path: Path) -> None:
    eight = np.arange(64, dtype=np.uint8).reshape(8, 8)
    write_dicom(tmp_path / "normal" / "inv.dcm", eight, photometric="MONOCHROME1",
                WindowCenter=30, WindowWidth=60)  # fmt: skip
    signed = (np.arange(64, dtype=np.int16).reshape(8, 8) - 32).astype(np.int16)
    write_dicom(tmp_path / "normal" / "signed.dcm", signed, signed=True, syntax=IMPLICIT_LE)
    ctx = context(tmp_path)
    good, bad = walk(tmp_path, ctx)
    assert bad == []
    inverted, signed_raw = (dicom.decode(r, ctx) for r in good)
    assert inverted.invert is True
    assert inverted.pixels.dtype == np.uint8
    np.testing.assert_array_equal(inverted.pixels, eight)
    assert inverted.window == (30.0, 60.0)
    assert signed_raw.pixels.dtype == np.float32  # signed values kept, as float32
    np.testing.assert_array_equal(signed_raw.pixels, signed.astype(np.float32))


def test_rgb_dicom_is_height_width_3(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 50
    write_dicom(tmp_path / "effusion" / "colour.dcm", rgb, photometric="RGB")
    ctx = context(tmp_path)
    good, _ = walk(tmp_path, ctx)
    image = dicom.decode(good[0], ctx)
    assert image.pixels.shape == (8, 8, 3)
    np.testing.assert_array_equal(image.pixels, rgb)


def test_rle_compressed_and_deflated_files_decode_to_the_same_values(tmp_path: Path) -> None:
    write_dicom(tmp_path / "normal" / "rle.dcm", grey16(), compress="1.2.840.10008.1.2.5")
    write_dicom(tmp_path / "normal" / "zip.dcm", grey16(), syntax="1.2.840.10008.1.2.1.99")
    ctx = context(tmp_path)
    good, bad = walk(tmp_path, ctx)
    assert bad == [] and len(good) == 2
    for record in good:
        np.testing.assert_array_equal(dicom.decode(record, ctx).pixels, grey16())


def test_csv_manifest_paths_relative_to_it(tmp_path: Path) -> None:
    write_dicom(tmp_path / "scans" / "one.dcm", grey16())
    write_dicom(tmp_path / "scans" / "two.dcm", grey16(5))
    manifest = tmp_path / "labels.csv"
    manifest.write_text(
        "path,label,comment\n"
        "scans/one.dcm,effusion,x\n"
        "scans/two.dcm,normal,y\n"
        "scans/gone.dcm,normal,z\n"
        "../outside.dcm,normal,z\n"
        "scans/one.dcm,fracture,z\n"
    )
    ctx = context(tmp_path)
    good, bad = walk(manifest, ctx)
    assert [(r.source, r.target) for r in good] == [("scans/one.dcm", 1), ("scans/two.dcm", 0)]
    assert [b.where for b in bad] == [f"{manifest}:4", f"{manifest}:5", f"{manifest}:6"]
    assert "does not exist" in bad[0].why
    assert "leaves the CSV's folder" in bad[1].why
    assert "'fracture' is not a class" in bad[2].why


def test_manifest_without_label_column_is_an_error(tmp_path: Path) -> None:
    from flsilo.runtime.errors import DataError

    single = write_dicom(tmp_path / "one.dcm", grey16())  # one file cannot be a data set
    with pytest.raises(DataError) as caught:
        walk(single, context(tmp_path))
    assert caught.value.code == "data-format"
    assert "a folder per class, or a CSV manifest" in caught.value.message

    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,finding\na.dcm,normal\n")
    with pytest.raises(DataError) as caught:
        walk(manifest, context(tmp_path))
    assert caught.value.code == "csv-missing-column"


def test_compressed_syntax_without_its_decoder_names_the_package(tmp_path: Path) -> None:
    no_jpeg_plugins()
    write_dicom(tmp_path / "normal" / "jpeg.dcm", grey16(), syntax=JPEG_LOSSLESS)
    _, bad = walk(tmp_path, context(tmp_path))
    assert len(bad) == 1
    assert bad[0].where == str(tmp_path / "normal" / "jpeg.dcm")
    assert "JPEG Lossless" in bad[0].why
    assert "not installed" in bad[0].why
    assert "pylibjpeg" in bad[0].why
    assert "python-gdcm" in bad[0].why


def test_12_bit_jpeg_extended_needs_more_than_pillow() -> None:
    from pydicom.uid import JPEGExtended12Bit

    no_jpeg_plugins()
    assert dicom.missing_decoder(JPEGExtended12Bit, 8) == ""  # Pillow decodes it
    reason = dicom.missing_decoder(JPEGExtended12Bit, 12)
    assert "JPEG Extended" in reason and "pip install pylibjpeg pylibjpeg-libjpeg" in reason


def test_truncated_and_damaged_files_are_bad_records(tmp_path: Path) -> None:
    whole = write_dicom(tmp_path / "normal" / "whole.dcm", grey16())
    data = whole.read_bytes()
    (tmp_path / "normal" / "cut.dcm").write_bytes(data[:-40])
    (tmp_path / "normal" / "header.dcm").write_bytes(data[:200])
    (tmp_path / "normal" / "text.dcm").write_bytes(b"hello" * 50)
    write_dicom(tmp_path / "normal" / "short.dcm", grey16(), PixelData=bytes(100))
    write_dicom(tmp_path / "fracture" / "x.dcm", grey16())
    good, bad = walk(tmp_path, context(tmp_path))
    assert [r.source for r in good] == ["normal/whole.dcm"]
    why = {Path(b.where).name: b.why for b in bad}
    assert "truncated" in why["cut.dcm"]
    assert "declares 128 bytes, 88 follow" in why["cut.dcm"]
    assert "truncated or damaged" in why["header.dcm"]
    assert "not a DICOM file" in why["text.dcm"]
    assert "holds 100 bytes" in why["short.dcm"] and "need 128" in why["short.dcm"]
    assert "'fracture' is not a class" in why["fracture"]


def test_multi_frame_sampled_per_plan_or_refused(tmp_path: Path) -> None:
    frames = np.stack([np.full((8, 8), 10 * k, dtype=np.uint16) for k in range(10)])
    write_dicom(tmp_path / "normal" / "cine.dcm", frames, frames=10, FrameTime=100)
    _, bad = walk(tmp_path, context(tmp_path))
    assert len(bad) == 1 and "multi-frame file (10 frames)" in bad[0].why
    assert "--frames-per-clip" in bad[0].why

    ctx = context(tmp_path, frames_per_clip=3)
    good, bad = walk(tmp_path, ctx)
    assert bad == []
    assert [r.frame for r in good] == ["frame=2", "frame=6", "frame=9"]
    assert len({r.digest for r in good}) == 1  # one file, three samples
    decoded = [dicom.decode(r, ctx) for r in good]
    assert [int(d.pixels[0, 0]) for d in decoded] == [10, 50, 80]
    assert decoded[1].provenance == "normal/cine.dcm frame 6"

    ctx = context(tmp_path, frame_rate=2.5)  # FrameTime 100 ms: every fourth frame
    good, _ = walk(tmp_path, ctx)
    assert [r.frame for r in good] == ["frame=1", "frame=5", "frame=9"]


def test_frame_rate_needs_frame_time(tmp_path: Path) -> None:
    frames = np.zeros((4, 8, 8), dtype=np.uint8)
    write_dicom(tmp_path / "normal" / "cine.dcm", frames, frames=4)
    _, bad = walk(tmp_path, context(tmp_path, frame_rate=5))
    assert "without a FrameTime" in bad[0].why


def test_a_file_changed_after_indexing_is_a_bad_record_at_decode(tmp_path: Path) -> None:
    file = write_dicom(tmp_path / "normal" / "a.dcm", grey16())
    ctx = context(tmp_path)
    good, _ = walk(tmp_path, ctx)
    file.write_bytes(file.read_bytes()[:-60])
    with pytest.raises(BadRecord) as caught:
        dicom.decode(good[0], ctx)
    assert caught.value.where == str(file)
    assert "cannot decode the pixel data" in caught.value.why


def test_voi_lut_table_gives_its_range_as_the_window() -> None:
    pydicom = pydicom_or_skip()
    ds = pydicom.Dataset()
    item = pydicom.Dataset()
    item.LUTDescriptor = [4096, -1000, 12]
    ds.VOILUTSequence = [item]
    assert dicom.file_window(ds) == (1048.0, 4096.0)
    ds.WindowCenter, ds.WindowWidth = "50", "0"  # a zero width is no window
    assert dicom.file_window(ds) == (1048.0, 4096.0)


def test_without_pydicom_a_usage_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flsilo.runtime.errors import UsageError

    monkeypatch.setitem(__import__("sys").modules, "pydicom", None)  # import fails
    with pytest.raises(UsageError) as caught:
        walk(tmp_path, context(tmp_path))
    assert caught.value.code == "dicom-extra"
    assert "flsilo[dicom]" in caught.value.hint


def test_the_plans_preprocessing_makes_monochrome1_and_2_copies_alike(tmp_path: Path) -> None:
    """The same image stored MONOCHROME2 with a rescale, and MONOCHROME1 inverted without
    one, each with its own window: after the plan's dicom intensity they are one image."""
    from flsilo.plans.preprocessing import Preprocess
    from site_kit.preprocess import build

    stored = grey16()  # values 0 .. 6300
    write_dicom(tmp_path / "normal" / "m2.dcm", stored, RescaleSlope=2, RescaleIntercept=-1000,
                WindowCenter=5300, WindowWidth=12600)  # fmt: skip
    write_dicom(tmp_path / "normal" / "m1.dcm", (6300 - stored).astype(np.uint16),
                photometric="MONOCHROME1", WindowCenter=3150, WindowWidth=6300)  # fmt: skip
    ctx = context(tmp_path)
    good, _ = walk(tmp_path, ctx)
    prep = build(Preprocess(intensity="dicom", window="file"), (1, 8, 8))
    m1, m2 = (prep.image(dicom.decode(r, ctx)) for r in good)
    np.testing.assert_allclose(m1, m2, atol=1e-6)
    assert float(m2.min()) == 0.0 and float(m2.max()) == 1.0
    fixed = build(Preprocess(intensity="dicom", window="5300,12600"), (1, 8, 8))
    np.testing.assert_allclose(fixed.image(dicom.decode(good[1], ctx)), m2, atol=1e-6)


def test_damaged_compressed_pixels_are_a_bad_record_when_read(tmp_path: Path) -> None:
    """The header checks pass (an RLE frame is there); the bytes are not RLE: found at read."""
    from flsilo.plans.federation import DataSpec
    from flsilo.runtime.errors import DataError
    from site_kit.data.samples import open_samples

    file = write_dicom(tmp_path / "normal" / "rle.dcm", grey16(), syntax="1.2.840.10008.1.2.5")
    samples = open_samples(tmp_path, "dicom", CLASSES, (1, 8, 8), DataSpec())
    assert len(samples) == 1
    with pytest.raises(DataError) as caught:
        samples.sample(0)
    assert caught.value.code == "bad-record"
    assert str(caught.value.path) == str(file)
    assert "cannot decode the pixel data" in caught.value.message
    assert "changed" not in caught.value.message
    assert "remove the file" in caught.value.hint
