"""Multilabel targets through the data adapters: an image manifest and an npz file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flsilo.plans.federation import DataSpec
from flsilo.plans.plan import TaskSpec
from flsilo.runtime.errors import DataError
from site_kit.data.samples import load_dataset, open_samples

SPEC = TaskSpec("multilabel")
FINDINGS = ("effusion", "nodule")


def _images(folder: Path, rows: list[str]) -> Path:
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((4, 4), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def test_an_image_manifest_gives_multi_hot_targets_and_bad_cells_are_bad_records(
    tmp_path: Path,
) -> None:
    csv = _images(tmp_path / "img", ["path,nodule,effusion,site", "0.png,1,0,x", "1.png,0,0,x",
                                     "2.png,1,maybe,x"])  # fmt: skip
    samples = open_samples(csv, "images-csv", FINDINGS, (1, 4, 4), DataSpec(), task=SPEC,
                           skip_bad=True)  # fmt: skip
    assert len(samples) == 2 and samples.target(0).tolist() == [0.0, 1.0]  # columns by name
    assert samples.class_counts(2) == [0, 1]
    assert "finding 'effusion' is 'maybe', not 0 or 1" in str(samples.problems[0])
    missing = _images(tmp_path / "img2", ["path,effusion", "0.png,1"])
    with pytest.raises(DataError) as err:
        open_samples(missing, "images-csv", FINDINGS, (1, 4, 4), DataSpec(), task=SPEC)
    assert err.value.code == "csv-missing-column" and "'nodule'" in err.value.message
    assert "the header has path, effusion" in err.value.hint


def test_an_npz_file_holds_one_row_of_findings_per_sample(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(
        path, x=np.arange(12, dtype=np.float32).reshape(3, 4), y=np.array([[1, 0], [0, 1], [1, 1]])
    )
    data = load_dataset(path, "npz", FINDINGS, (4,), DataSpec(), task=SPEC)
    assert data.y.tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]] and data.task == SPEC
    assert data.class_counts(2) == [2, 2]


def test_a_folder_of_classes_cannot_carry_findings(tmp_path: Path) -> None:
    (tmp_path / "data" / "effusion").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "data" / "effusion" / "a.png")
    with pytest.raises(DataError) as err:
        open_samples(tmp_path / "data", "imagefolder", FINDINGS, (1, 4, 4), DataSpec(), task=SPEC)
    assert err.value.code == "data-format" and "multilabel" in err.value.message
