"""``site check-data --preview``: what the network sees, and a site that trains by the plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

from tests.conftest import fingerprint, make_key


def _images(root: Path) -> Path:
    """Two classes of wide white-on-grey images (8 x 16): a letterbox pads them top and bottom."""
    data = root / "images"
    for c, name in enumerate(("a", "b")):
        (data / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.full((8, 16), 60 + 100 * c, dtype=np.uint8)
            pixels[:, i] = 255
            Image.fromarray(pixels).save(data / name / f"{i}.png")
    return data


def _site(cli, root: Path, *extra: str) -> Path:
    keys = root / "keys"
    make_key(keys / "hub")
    make_key(keys / "site-a")
    hub = root / "hub"
    made = cli(
        "hub", "init", hub, "--federation", "img", "--model", "logreg", "--classes", "a,b",
        "--input-shape", "1,8,8", "--key", keys / "hub", "--batch-size", "4", *extra,
    )  # fmt: skip
    assert made.code == 0, made.err
    pub = keys / "site-a.pub"
    assert cli("hub", "enroll", hub, "site-a", pub, "--fingerprint", fingerprint(pub)).code == 0
    assert cli("hub", "kit", hub, "site-a", "--out", root / "kit").code == 0
    site = root / "site-a"
    made = cli(
        "site", "init", site, "--kit", root / "kit", "--site-id", "site-a",
        "--key", keys / "site-a", "--hub-fingerprint", fingerprint(keys / "hub.pub"),
        "--data", _images(root),
    )  # fmt: skip
    assert made.code == 0, made.err
    return site


def test_preview_shows_the_plans_preprocessing_and_augmentation(cli, tmp_path: Path) -> None:
    site = _site(cli, tmp_path, "--resize", "letterbox", "--augment", "hflip,rotate:10")
    grid = tmp_path / "grid.png"
    result = cli("site", "check-data", site, "--preview", grid, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["preview"] == str(grid)
    assert report["preprocess"][0] == "resize letterbox, intensity 8bit"
    assert report["preprocess"][-1] == "augment (training only): hflip,rotate:10"
    image = np.asarray(Image.open(grid).convert("L"))
    rows, cols = 12, 5  # 6 samples of each class; the sample, then 4 augmented draws
    assert image.shape == (20 + rows * (96 + 4), 150 + cols * (96 + 4))
    first = image[20 : 20 + 96, 150 : 150 + 96]  # class a, file 0.png, letterboxed: 8x16 -> 4x8
    assert first[:24].max() == 0 and first[-24:].max() == 0  # black bars above and below
    assert first[24:72, 24:].max() == 60 and first[24:72, :12].min() > 100  # column 0 whiter
    text = cli("site", "check-data", site, "--preview", grid)
    assert "preview: " in text.out and "resize letterbox" in text.out


def test_preview_of_a_table_is_a_usage_error(cli, tmp_path: Path) -> None:
    site = _site(cli, tmp_path)
    ws_toml = site / "federation.toml"
    ws_toml.write_text(ws_toml.read_text().replace("input_shape = [1, 8, 8]", "input_shape = [4]"))
    result = cli("site", "check-data", site, "--preview", tmp_path / "grid.png")
    assert result.code == 2 and "--preview shows images" in result.err
    assert not (tmp_path / "grid.png").exists()


def test_the_site_trains_by_the_plans_resize(cli, tmp_path: Path) -> None:
    bundles = {}
    for resize in ("stretch", "letterbox"):
        site = _site(cli, tmp_path / resize, "--resize", resize, "--seed", "3")
        package = site / "packages" / "img-r0000.safetensors"
        result = cli("train", package, "--site", site, "--device", "cpu")
        assert result.code == 0, result.err
        bundles[resize] = load_file(str(site / "outbox" / "img-r0000-site-a.safetensors"))
    names = sorted(bundles["stretch"])
    assert names == sorted(bundles["letterbox"])
    assert any(not np.array_equal(bundles["stretch"][n], bundles["letterbox"][n]) for n in names)


def test_preview_of_npz_images_shows_the_rows_the_network_gets(cli, federation) -> None:
    """An npz site of 1 x 8 x 8 digits: each row reshaped to the input, without augmented
    draws (training feeds a table's rows as they are), not an internal error."""
    grid = federation.root / "grid.png"
    result = cli("site", "check-data", federation.sites["site-a"], "--preview", grid, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["preview"] == str(grid)
    assert (
        "npz images are fed as stored: resize, intensity, normalize and augment do not apply"
        in (json.loads(result.out)["preprocess"])
    )
    image = np.asarray(Image.open(grid).convert("L"))
    assert image.shape == (20 + 12 * (96 + 4), 150 + 96 + 4)  # 12 samples, one column each
    first = image[20 : 20 + 96, 150 : 150 + 96]
    assert first.min() == 0 and first.max() == 255  # the digit stretched to black and white
