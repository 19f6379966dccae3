"""The plan's preprocessing on real arrays: geometry, intensity, normalisation, tables, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from flsilo.plans.preprocessing import (
    Augment,
    Preprocess,
    augment_text,
    parse_augment,
    parse_impute,
    parse_normalize,
    parse_resize,
    preprocess_problem,
)
from site_kit.data.records import RawImage
from site_kit.preprocess import (
    PreprocessError,
    augment_image,
    build,
    raw_feature_count,
    sample_rng,
)


def _pre(shape=(1, 4, 4), **kw):
    return build(Preprocess(**kw), shape)


def test_default_is_stretch_8bit_unnormalised():
    pixels = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    out = _pre().image(RawImage(pixels))
    assert out.dtype == np.float32 and out.shape == (1, 4, 4)
    np.testing.assert_allclose(out[0], pixels / 255.0, rtol=1e-6)


def test_stretch_changes_aspect():
    pixels = np.full((2, 8), 255, dtype=np.uint8)
    out = _pre((1, 4, 4)).image(RawImage(pixels))
    assert out.shape == (1, 4, 4)
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)


def test_letterbox_pads_the_short_axis_with_black():
    pixels = np.full((2, 8), 255, dtype=np.uint8)  # 1:4, into 4x4: 1 row of image, centred
    out = _pre((1, 4, 4), resize="letterbox").image(RawImage(pixels))[0]
    assert out.shape == (4, 4)
    np.testing.assert_allclose(out[1], 1.0, rtol=1e-6)
    assert out[0].max() == 0 and out[2:].max() == 0


def test_letterbox_of_a_tall_image_pads_left_and_right():
    pixels = np.full((8, 2), 255, dtype=np.uint8)
    out = _pre((1, 4, 4), resize="letterbox").image(RawImage(pixels))[0]
    np.testing.assert_allclose(out[:, 1], 1.0, rtol=1e-6)
    assert out[:, 0].max() == 0 and out[:, 2:].max() == 0


def test_shorter_side_crops_the_centre():
    # 8 x 16 image whose columns number themselves; ratio 1: shorter side 8 -> 4, width 8,
    # the centre 4 columns are the source's columns 4..11 (pairs averaged)
    pixels = np.tile(np.arange(16, dtype=np.uint8) * 16, (8, 1))
    out = _pre((1, 4, 4), resize="shorter-side:1").image(RawImage(pixels))[0]
    assert out.shape == (4, 4)
    cols = out[0] * 255 / 16
    np.testing.assert_allclose(cols, [4.5, 6.5, 8.5, 10.5], atol=1e-4)
    np.testing.assert_allclose(out[0], out[3])


def test_shorter_side_ratio_keeps_less_of_the_image():
    pixels = np.zeros((100, 100), dtype=np.uint8)
    pixels[:, :10] = 255  # a white border band on the left
    full = _pre((1, 10, 10), resize="shorter-side:1").image(RawImage(pixels))[0]
    cropped = _pre((1, 10, 10), resize="shorter-side:0.5").image(RawImage(pixels))[0]
    assert full[:, 0].min() > 0.8
    assert cropped.max() == 0  # the central half never sees the band


def test_sixteen_bit_scaling():
    pixels = np.array([[0, 65535], [32768, 4096]], dtype=np.uint16)
    out = _pre((1, 2, 2), intensity="16bit").image(RawImage(pixels))[0]
    np.testing.assert_allclose(out, pixels / 65535.0, rtol=1e-6)
    with pytest.raises(PreprocessError, match="16-bit"):
        _pre((1, 2, 2)).image(RawImage(pixels))


def test_dicom_window_from_plan_and_file_and_monochrome1():
    hu = np.array([[-1000.0, 0.0], [40.0, 2000.0]], dtype=np.float32)
    plan_window = _pre((1, 2, 2), intensity="dicom", window="40,80")
    out = plan_window.image(RawImage(hu))[0]
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.5, 1.0]], atol=1e-6)
    file_window = _pre((1, 2, 2), intensity="dicom", window="file")
    out = file_window.image(RawImage(hu, window=(0.0, 2000.0)))[0]
    np.testing.assert_allclose(out, [[0.0, 0.5], [0.52, 1.0]], atol=1e-6)
    inverted = file_window.image(RawImage(hu, window=(0.0, 2000.0), invert=True))[0]
    np.testing.assert_allclose(inverted, [[1.0, 0.5], [0.48, 0.0]], atol=1e-6)
    no_window = file_window.image(RawImage(hu))[0]  # neither: the image's own range
    np.testing.assert_allclose(no_window, (hu + 1000) / 3000, atol=1e-6)


def test_channels_follow_the_input_shape():
    grey = np.full((2, 2), 100, dtype=np.uint8)
    rgb = _pre((3, 2, 2)).image(RawImage(grey))
    assert rgb.shape == (3, 2, 2)
    np.testing.assert_allclose(rgb[0], rgb[2])
    colour = np.zeros((2, 2, 4), dtype=np.uint8)
    colour[..., 0] = 255  # red, with alpha
    luma = _pre((1, 2, 2)).image(RawImage(colour))
    np.testing.assert_allclose(luma, 0.299, rtol=1e-5)


def test_normalisation_imagenet_fixed_and_federation():
    white = np.full((2, 2, 3), 255, dtype=np.uint8)
    out = _pre((3, 2, 2), normalize="imagenet").image(RawImage(white))
    np.testing.assert_allclose(
        out[:, 0, 0], [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225], rtol=1e-5
    )
    out = _pre((3, 2, 2), normalize="0.5,0.5,0.5/0.25,0.25,0.25").image(RawImage(white))
    np.testing.assert_allclose(out, 2.0, rtol=1e-6)
    fed = Preprocess(normalize="federation", federation_mean=(0.5,), federation_std=(0.5,))
    out = build(fed, (1, 2, 2)).image(RawImage(np.zeros((2, 2), dtype=np.uint8)))
    np.testing.assert_allclose(out, -1.0)
    # before the stats round wrote the statistics: unnormalised (what the stats round measures)
    out = _pre((1, 2, 2), normalize="federation").image(RawImage(np.zeros((2, 2), dtype=np.uint8)))
    np.testing.assert_allclose(out, 0.0)


def test_table_impute_standardize_and_indicator():
    p = Preprocess(
        standardize="federation",
        impute="mean,indicator",
        federation_mean=(1.0, 10.0),
        federation_std=(2.0, 5.0),
    )
    assert raw_feature_count(p, (4,)) == 2
    pre = build(p, (4,))
    out = pre.table(np.array([3.0, np.nan], dtype=np.float32))
    np.testing.assert_allclose(out, [1.0, 0.0, 0.0, 1.0])
    constant = build(Preprocess(impute="constant:-1"), (2,))
    np.testing.assert_allclose(constant.table(np.array([np.nan, 4.0])), [-1.0, 4.0])
    with pytest.raises(PreprocessError, match="missing"):
        build(Preprocess(), (2,)).table(np.array([np.nan, 4.0]))
    np.testing.assert_allclose(build(Preprocess(), (2,)).table(np.array([1.5, 4.0])), [1.5, 4.0])


@pytest.mark.parametrize(
    "augment",
    [
        "hflip",
        "crop:0.5",
        "rotate:15",
        "jitter:0.3",
        "noise:0.05",
        "hflip,crop:0.6,rotate:10,jitter:0.2,noise:0.01",
    ],
)
def test_each_augmentation_is_deterministic_for_a_fixed_rng(augment):
    x = np.random.default_rng(0).uniform(size=(3, 16, 16)).astype(np.float32)
    spec = parse_augment(augment)
    a = augment_image(x, spec, sample_rng(7, 3))
    b = augment_image(x, spec, sample_rng(7, 3))
    assert a.dtype == np.float32 and a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    others = [augment_image(x, spec, sample_rng(7, i)) for i in range(4, 12)]
    assert any(not np.array_equal(a, o) for o in others)  # the seed matters
    assert augment_text(spec) == augment


def test_hflip_mirrors_and_augmentation_needs_an_rng():
    x = np.arange(4, dtype=np.uint8).reshape(1, 4) * 80
    pre = build(Preprocess(), (1, 1, 4), parse_augment("hflip"))
    plain = pre.image(RawImage(x))
    np.testing.assert_allclose(plain[0, 0], x[0] / 255.0, rtol=1e-6)  # no rng: no augment
    seen = {
        tuple(np.round(pre.image(RawImage(x), sample_rng(0, i))[0, 0] * 255)) for i in range(16)
    }
    assert seen == {(0.0, 80.0, 160.0, 240.0), (240.0, 160.0, 80.0, 0.0)}


def test_sample_rng_depends_on_round_record_and_epoch():
    draws = {float(sample_rng(s, i, e).uniform()) for s in (0, 1) for i in (0, 1) for e in (0, 1)}
    assert len(draws) == 8
    assert sample_rng(-1, 0).uniform() == sample_rng(2**64 - 1, 0).uniform()


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("resize", "squash", "not stretch"),
        ("resize", "shorter-side:0", "crop ratio"),
        ("resize", "letterbox:0.5", "not stretch"),
        ("intensity", "12bit", "intensity"),
        ("window", "40", "CENTER,WIDTH"),
        ("window", "40,-1", "positive"),
        ("normalize", "0.5/0.2,0.3", "as many"),
        ("normalize", "0.5/0", "positive"),
        ("standardize", "zscore", "standardize"),
        ("impute", "median", "not none"),
        ("impute", "mean,flag", "indicator"),
    ],
)
def test_preprocess_rules(field, value, words):
    problem = preprocess_problem(Preprocess(**{field: value}))
    assert problem is not None and words in problem


def test_parsers():
    assert parse_resize("shorter-side") == ("shorter-side", 0.875)
    assert parse_resize("shorter-side:0.9") == ("shorter-side", 0.9)
    assert parse_normalize("1,2,3/4,5,6") == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    assert parse_impute("constant:2.5,indicator").indicator
    assert parse_augment("none") == Augment()
    with pytest.raises(ValueError, match="rotate"):
        parse_augment("rotate:200")
    with pytest.raises(ValueError, match="not hflip"):
        parse_augment("blur:2")
    assert Preprocess().federation_mean == () and preprocess_problem(Preprocess()) is None
