"""The generated detection scenes: files in YOLO layout and COCO, boxes that frame the shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from flsilo.scoring.detlabels import parse_yolo
from sim_kit.scenes import CAMERAS, SHAPES, main, scene
from tests.media import av_or_skip


def test_boxes_frame_the_drawn_shapes() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        image, boxes = scene(rng, 64, CAMERAS["even"])
        pixels = np.asarray(image, dtype=np.float64)
        assert image.size == (64, 64) and len(boxes) >= 1
        for cls, x1, y1, x2, y2 in boxes.tolist():
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64 and int(cls) in range(len(SHAPES))
            # the shape stands out at the box's centre against the background just outside
            centre = pixels[int((y1 + y2) / 2), int((x1 + x2) / 2)].mean()
            x_out = int(x1) - 2 if x1 >= 2 else int(x2) + 1
            outside = pixels[int((y1 + y2) / 2), x_out].mean()
            assert abs(centre - outside) > 15


def test_cameras_sample_different_frames() -> None:
    street = [scene(np.random.default_rng(i), 128, CAMERAS["street"])[1] for i in range(30)]
    yard = [scene(np.random.default_rng(i), 128, CAMERAS["yard"])[1] for i in range(30)]
    size = lambda sets: np.mean([b[3] - b[1] for boxes in sets for b in boxes])  # noqa: E731
    assert size(yard) > size(street) + 5


def test_script_writes_yolo_and_coco(tmp_path: Path, capsys) -> None:
    main([str(tmp_path / "s"), "--images", "3", "--seed", "4", "--size", "64", "--coco"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "s")
    images = sorted((tmp_path / "s" / "images").iterdir())
    labels = sorted((tmp_path / "s" / "labels").iterdir())
    assert [p.stem for p in images] == [p.stem for p in labels] == ["00000", "00001", "00002"]
    coco = json.loads((tmp_path / "s" / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == list(SHAPES)
    total = 0
    for i, label in enumerate(labels):
        boxes, problems = parse_yolo(label.read_text(), SHAPES)
        assert problems == []
        total += len(boxes)
        mine = [a for a in coco["annotations"] if a["image_id"] == i + 1]
        for row, ann in zip(boxes, mine, strict=True):
            assert ann["category_id"] == int(row[0]) + 1
            assert np.allclose(np.array(ann["bbox"][:2]) / 64, row[1:3], atol=1e-4)
        assert Image.open(images[i]).size == (64, 64)
    assert total == len(coco["annotations"])


def test_script_writes_a_clip_labelled_per_frame(tmp_path: Path, capsys) -> None:
    av = av_or_skip()
    main([str(tmp_path / "v"), "--images", "4", "--seed", "2", "--size", "32", "--video"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "v")
    assert not (tmp_path / "v" / "images").exists()
    coco = json.loads((tmp_path / "v" / "annotations.json").read_text())
    assert [e["time_s"] for e in coco["images"]] == [0.1, 0.3, 0.5, 0.7]
    assert {e["file_name"] for e in coco["images"]} == {"clips/scenes.mp4"}
    with av.open(str(tmp_path / "v" / "clips" / "scenes.mp4")) as clip:
        assert sum(1 for _ in clip.decode(video=0)) == 4
