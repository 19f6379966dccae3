"""A classify CSV without its label column: one line showing the header found, the separator
when the file was saved with ';' or tabs, and the federation's `--label-column`."""

from __future__ import annotations

from pathlib import Path

import pytest

from flsilo.plans.federation import DataSpec
from flsilo.runtime.errors import DataError
from site_kit.data.samples import open_samples

CLASSES = ("no", "yes")


def _refusal(path: Path, fmt: str, text: str, shape: tuple[int, ...] = (2,)) -> DataError:
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        open_samples(path, fmt, CLASSES, shape, DataSpec())
    err = caught.value
    assert err.code == "csv-missing-column" and err.path == str(path)
    assert "\n" not in err.one_line()
    return err


def test_a_table_without_its_label_column_shows_the_header_and_names_label_column(
    tmp_path: Path,
) -> None:
    err = _refusal(tmp_path / "t.csv", "csv", "age,dose,outcome\n1,2,yes\n")
    assert err.message == "no label column 'label' in the header"
    assert err.hint.startswith("the header has age, dose, outcome; rename the label column")
    assert "'hub init --label-column'" in err.hint


@pytest.mark.parametrize(("sep", "name"), [(";", "';'"), ("\t", "tabs")])
def test_a_table_saved_with_another_separator_is_told_so(
    tmp_path: Path, sep: str, name: str
) -> None:
    text = sep.join(("age", "dose", "label")) + "\n" + sep.join(("1", "2", "yes")) + "\n"
    err = _refusal(tmp_path / "t.csv", "csv", text)
    shown = repr(sep.join(("age", "dose", "label")))
    assert err.hint == (
        f"the header has {shown}: it looks separated by {name}, not commas; "
        "save the file as comma-separated CSV"
    )


def test_an_image_manifest_without_label_shows_the_header(tmp_path: Path) -> None:
    err = _refusal(tmp_path / "m.csv", "images-csv", "path,diagnosis\na.png,yes\n", (1, 4, 4))
    assert err.message == "no 'label' column in the header"
    assert err.hint.startswith("the header has path, diagnosis; an image manifest has")
    semi = _refusal(tmp_path / "s.csv", "images-csv", "path;label\na.png;yes\n", (1, 4, 4))
    assert "separated by ';', not commas" in semi.hint and "'path;label'" in semi.hint


@pytest.mark.parametrize(("fmt", "shape"), [("csv", (2,)), ("images-csv", (1, 4, 4))])
def test_a_folder_given_as_the_csv_is_said_to_be_a_folder(
    tmp_path: Path, fmt: str, shape: tuple[int, ...]
) -> None:
    with pytest.raises(DataError) as caught:
        open_samples(tmp_path, fmt, CLASSES, shape, DataSpec())
    assert caught.value.message == "this is a folder, not a CSV file"
    assert "give the .csv file itself" in caught.value.hint and caught.value.code == "bad-data"
