"""The built-in detector: shapes, decoding, per-image losses, and that it learns boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flsilo.models.detector import centernet_loss, decode
from flsilo.models.registry import build_model
from flsilo.runtime.errors import UsageError
from flsilo.scoring.detmetrics import DetectionMeter


def test_output_is_a_quarter_size_grid_of_heat_maps_and_boxes() -> None:
    model = build_model("detector:width=8", (3, 64, 48), 3)
    assert model(torch.zeros(2, 3, 64, 48)).shape == (2, 3 + 4, 16, 12)
    assert model.flsilo_head == "head"


@pytest.mark.parametrize(
    "spec,shape",
    [("detector", (3, 60, 64)), ("detector:width=7", (3, 64, 64)), ("detector", (12,))],
)
def test_bad_shapes_and_widths_are_refused(spec: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(UsageError):
        build_model(spec, shape, 2)


def _output_for(k: int, h: int, w: int, cls: int, cell: tuple[int, int], off: float, size: float):
    out = torch.full((1, k + 4, h, w), 0.0)
    out[0, :k] = -20.0
    x, y = cell
    out[0, cls, y, x] = 20.0
    out[0, k : k + 2, y, x] = off
    out[0, k + 2 :, y, x] = math.log(size)
    return out


def test_decode_reads_the_peak_offset_and_size() -> None:
    out = _output_for(2, 16, 16, 1, (5, 3), 0.5, 4.0)
    [(boxes, scores, labels)] = decode(out, 2)
    assert labels.tolist() == [1] and scores[0] > 0.99
    assert np.allclose(
        boxes[0], [(5.5 - 2) / 16, (3.5 - 2) / 16, (5.5 + 2) / 16, (3.5 + 2) / 16], atol=1e-6
    )


def test_loss_is_per_image_and_lowest_at_the_target() -> None:
    target = torch.tensor([[1, (5.5 - 2) / 16, (3.5 - 2) / 16, (5.5 + 2) / 16, (3.5 + 2) / 16]])
    right = _output_for(2, 16, 16, 1, (5, 3), 0.5, 4.0)
    wrong = _output_for(2, 16, 16, 0, (9, 9), 0.1, 1.0)
    both = torch.cat([right, wrong])
    losses = centernet_loss(both, [target, target], 2)
    assert losses.shape == (2,)
    assert float(losses[0]) < 0.05 < float(losses[1])
    # one image's loss does not depend on the other images of its batch
    alone = centernet_loss(wrong, [target], 2)
    assert torch.allclose(alone[0], losses[1])
    empty = centernet_loss(right, [torch.zeros(0, 5)], 2)
    assert float(empty[0]) > 1.0  # a confident peak where there is no object costs


def test_learns_to_find_one_square() -> None:
    """A few dozen steps on four images of one white square each: the boxes are found."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = torch.zeros(4, 3, 32, 32)
    targets = []
    for i in range(4):
        x0, y0 = (int(v) for v in rng.integers(2, 20, 2))
        x[i, :, y0 : y0 + 10, x0 : x0 + 10] = 1.0
        targets.append(torch.tensor([[0, x0 / 32, y0 / 32, (x0 + 10) / 32, (y0 + 10) / 32]]))
    model = build_model("detector:width=8", (3, 32, 32), 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = model.detection_loss(x, targets).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    meter = DetectionMeter(1)
    for (boxes, scores, labels), t in zip(model.detect(x), targets, strict=True):
        meter.add(t[:, 1:].numpy(), t[:, 0].numpy(), boxes, scores, labels)
    assert meter.finish().map50 > 0.9
