"""The site's data index and the images-csv manifest: what is indexed, refreshed, refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flsilo.plans.federation import DataSpec
from flsilo.plans.preprocessing import Preprocess
from flsilo.runtime.errors import DataError, UsageError
from site_kit.data import FORMATS, adapter, guess_format
from site_kit.data.index import INDEX_DIR
from site_kit.data.samples import load_dataset, open_samples

CLASSES = ("cat", "dog")
SHAPE = (3, 8, 8)


def _png(path: Path, value: int, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)
    return path


def _folder(root: Path) -> Path:
    for i in range(3):
        _png(root / "cat" / f"{i}.png", 10 * i)
        _png(root / "dog" / f"{i}.png", 100 + 10 * i)
    return root


def _open(path: Path, store: Path | None = None, fmt: str | None = None, **kw):
    return open_samples(path, fmt, CLASSES, SHAPE, DataSpec(), store=store, **kw)


def _stored(store: Path) -> dict:
    (index,) = (store / INDEX_DIR).glob("*.json")
    return json.loads(index.read_text())


def test_every_format_name_has_a_module_with_the_adapter_functions() -> None:
    for name in ("imagefolder", "images-csv", "csv", "npz"):
        module = adapter(name)
        assert module.KIND in ("image", "table")
        assert hasattr(module, "rows" if module.KIND == "table" else "decode")
    assert set(FORMATS) >= {"imagefolder", "images-csv", "csv", "npz", "dicom", "video"}
    with pytest.raises(UsageError, match="unknown data format 'tiff-stack'"):
        adapter("tiff-stack")


def test_a_format_whose_reader_is_not_installed_names_its_extra(monkeypatch) -> None:
    monkeypatch.setitem(FORMATS, "video", "site_kit.data.not_installed_here")
    with pytest.raises(UsageError) as refused:
        adapter("video")
    assert "site_kit.data.not_installed_here is missing" in str(refused.value)
    assert "pip install 'flsilo[video]'" in (refused.value.hint or "")


def test_index_is_stored_once_and_refreshed_by_size_and_mtime(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    store = tmp_path / "site"
    samples = _open(data, store)
    assert len(samples) == 6 and samples.y.tolist() == [0, 0, 0, 1, 1, 1]
    first = _stored(store)
    assert first["flsilo_index"] == 1 and first["format"] == "imagefolder"
    assert [r[0] for r in first["records"]][:2] == ["cat/0.png", "cat/1.png"]

    # new bytes under the same size and mtime: the index trusts the stat and keeps the digest
    target = data / "cat" / "1.png"
    _png(target.with_suffix(".bmp"), 10)  # BMP: the same size whatever the pixels
    target.unlink()
    target = target.with_suffix(".bmp")
    samples = _open(data, store)
    first = _stored(store)
    st = target.stat()
    old = target.read_bytes()
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(target)
    assert len(target.read_bytes()) == len(old) and target.read_bytes() != old
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    kept = _stored(store)["records"][1][4]
    assert _open(data, store).index.record(1).digest == kept == first["records"][1][4]

    # a changed mtime: that file alone is hashed again
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = _open(data, store)
    rows = _stored(store)["records"]
    assert rows[1][4] != kept and rows[1][4] == again.index.record(1).digest
    assert [r[4] for i, r in enumerate(rows) if i != 1] == [
        r[4] for i, r in enumerate(first["records"]) if i != 1
    ]
    assert again.index.digest != samples.index.digest


def test_a_copy_of_the_data_has_the_same_index_digest(tmp_path: Path) -> None:
    a = _open(_folder(tmp_path / "a"), tmp_path / "s1")
    b = _open(_folder(tmp_path / "b"), tmp_path / "s2")
    assert a.index.digest == b.index.digest and a.digest() == b.digest()
    assert a.subset(np.array([0, 1])).digest() != a.digest()


def test_a_corrupt_image_is_a_bad_record_at_index_time_and_stays_one(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    (data / "dog" / "9.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as refused:
        _open(data, tmp_path / "site")
    assert "cannot decode image" in str(refused.value) and "9.png" in str(refused.value.path)
    assert not (tmp_path / "site").exists()  # a refused read writes no index
    samples = _open(data, tmp_path / "site", skip_bad=True)
    assert len(samples) == 6 and samples.skipped == 1
    bad = _stored(tmp_path / "site")["bad"]
    assert len(bad) == 1 and "cannot decode image" in bad[0][1]
    again = _open(data, tmp_path / "site", skip_bad=True)  # unchanged: the verdict is kept
    assert [p.why for p in again.problems] == [p.why for p in samples.problems]


def test_a_damaged_stored_index_is_rebuilt_from_the_data(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    first = _open(data, tmp_path / "site")
    (index,) = (tmp_path / "site" / INDEX_DIR).glob("*.json")
    index.write_text('{"flsilo_index": 1, "records": [[')
    assert _open(data, tmp_path / "site").index.digest == first.index.digest
    assert _stored(tmp_path / "site")["records_sha256"] == first.index.digest


def test_samples_decode_one_at_a_time_as_load_dataset_does(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    _png(data / "dog" / "big.png", 255, size=(20, 30))  # resized by the preprocessing
    samples = _open(data)
    whole = load_dataset(data, None, CLASSES, SHAPE, DataSpec())
    assert whole.x.shape == (7, *SHAPE) and whole.x.dtype == np.float32
    for k in range(len(samples)):
        assert np.array_equal(samples.sample(k), whole.x[k])
    assert float(whole.x[1].max()) == pytest.approx(10 / 255)


def _manifest(root: Path, rows: list[str], header: str = "path,label") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    csv = root / "labels.csv"
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    return csv


def test_images_csv_reads_paths_relative_to_the_csv(tmp_path: Path) -> None:
    root = tmp_path / "ward"
    _png(root / "scans" / "a.png", 30)
    _png(root / "scans" / "b.png", 60)
    csv = _manifest(root, ["scans/b.png,dog", "scans/a.png,cat"], header="note,path,label")
    csv.write_text("note,path,label\n,scans/b.png,dog\nx,scans/a.png,cat\n")
    assert guess_format(csv, SHAPE) == "images-csv"
    assert guess_format(csv, (13,)) == "csv"
    assert guess_format(csv, SHAPE, Preprocess(intensity="dicom")) == "dicom"
    assert guess_format(root, SHAPE, Preprocess(intensity="dicom")) == "dicom"
    intervals = _manifest(tmp_path / "gate", ["a.mp4,0,5,cat"], header="file,start_s,end_s,label")
    assert guess_format(intervals, SHAPE) == "video"  # not a table of three features
    assert guess_format(intervals, (3,)) == "csv"
    samples = _open(csv, tmp_path / "site")
    assert samples.fmt == "images-csv" and samples.y.tolist() == [1, 0]  # the CSV's order
    assert [samples.index.source(i) for i in range(2)] == ["scans/b.png", "scans/a.png"]
    assert float(samples.sample(1).max()) == pytest.approx(30 / 255)


def test_images_csv_bad_rows_each_name_their_row_and_reason(tmp_path: Path) -> None:
    root = tmp_path / "ward"
    _png(root / "a.png", 30)
    _png(tmp_path / "outside.png", 30)
    csv = _manifest(
        root,
        [
            "a.png,cat",
            "gone.png,cat",
            "a.png,horse",
            "../outside.png,dog",
            f"{tmp_path / 'outside.png'},dog",
            "a.png,dog",
            "notes.txt,dog",
            ",cat",
            "a.png",
        ],
    )
    samples = _open(csv, fmt="images-csv", skip_bad=True)
    assert len(samples) == 1
    problems = [str(p) for p in samples.problems]
    expected = [
        (":3", "file 'gone.png' does not exist"),
        (":4", "label 'horse' is not a class of this federation (cat, dog)"),
        (":5", "leaves the CSV's folder"),
        (":6", "leaves the CSV's folder"),
        (":7", "'a.png' is listed a second time (first on row 2)"),
        (":8", "'notes.txt' is not an image file"),
        (":9", "the path cell is empty"),
        (":10", "row has 1 cells, header has 2"),
    ]
    assert len(problems) == len(expected)
    for text, (row, why) in zip(problems, expected, strict=True):
        assert f"labels.csv{row}: " in text and why in text, text
    with pytest.raises(DataError) as refused:
        _open(csv, fmt="images-csv")
    assert "8 unusable records in all" in str(refused.value)


def test_images_csv_without_its_columns_is_one_error(tmp_path: Path) -> None:
    csv = _manifest(tmp_path, ["a.png,cat"], header="file,label")
    with pytest.raises(DataError, match="no 'path' column"):
        _open(csv, fmt="images-csv")


def test_no_usable_sample_names_the_first_unusable_one(tmp_path: Path) -> None:
    csv = _manifest(tmp_path / "ward", ["scans/gone.png,cat", "scans/also-gone.png,dog"])
    with pytest.raises(DataError) as err:
        _open(csv, skip_bad=True)
    line = err.value.one_line()
    assert "no usable samples found (2 skipped; the first: " in line
    assert f"{csv}:2: file 'scans/gone.png' does not exist" in line
    assert "if it is another format, pass --data-format" in line
