"""The plan's preprocessing applied: a ``RawImage`` or a table row becomes the model's input.

``build(preprocess, input_shape, augment)`` makes the one ``Preprocessor`` a round uses for
every sample, in training, validation, evaluation and statistics alike. An image goes
through, in this order: intensity scaling to [0, 1] (``8bit``: /255; ``16bit``: /65535,
8-bit files /255; ``dicom``: the plan's or the file's window, linear, clipped), inversion
of MONOCHROME1 data, the channels of the input shape (grey repeated to RGB, RGB to grey by
ITU-R 601 luma, an alpha channel dropped), the resize policy (bilinear), the augmentation
(only when the caller passes a sample's ``rng``: training only) and the normalisation.
A table row (float32, NaN where a value is missing) is imputed, standardised, and given
its missing-indicator features. Pure numpy and Pillow.

Augmentation is seeded per sample by ``sample_rng(round_seed, record_index, epoch)``, so a
bundle never depends on how many worker processes decoded it or in which order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from flsilo.plans.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    Impute,
    Preprocess,
    parse_impute,
    parse_normalize,
    parse_resize,
    parse_window,
)
from site_kit.data.records import RawImage

__all__ = [
    "Augment",
    "Preprocess",
    "Preprocessor",
    "augment_image",
    "build",
    "raw_feature_count",
    "sample_rng",
]

_Box = tuple[float, float, float, float]
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class PreprocessError(ValueError):
    """A sample the plan's preprocessing cannot take (a bad record, with the reason)."""


def sample_rng(round_seed: int, record_index: int, epoch: int = 0) -> np.random.Generator:
    """The generator of one sample's augmentation in one epoch of one round."""
    words = [round_seed % 2**64, record_index % 2**64, epoch % 2**64]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


def raw_feature_count(preprocess: Preprocess, input_shape: tuple[int, ...]) -> int:
    """Feature columns a table must hold: the input width, halved with missing indicators.

    ``--impute ...,indicator`` appends one 0/1 feature per input feature, so a model input
    of width 2F reads F columns.
    """
    width = math.prod(input_shape)
    return width // 2 if parse_impute(preprocess.impute).indicator else width


@dataclass(frozen=True)
class Preprocessor:
    """The plan's preprocessing for one input shape (see the module's docstring)."""

    preprocess: Preprocess
    input_shape: tuple[int, ...]
    augment: Augment
    mean: np.ndarray | None
    std: np.ndarray | None
    impute: Impute

    @property
    def channels(self) -> int:
        return self.input_shape[0]

    def scaled(self, raw: RawImage) -> np.ndarray:
        """Intensity, channels and resize: float32 C x H x W in [0, 1], not normalised."""
        x = _intensity(raw, self.preprocess)
        x = _channels(x, self.channels)
        _, height, width = self.input_shape
        return _resize(x, self.preprocess.resize, height, width)

    def image(self, raw: RawImage, rng: np.random.Generator | None = None) -> np.ndarray:
        """The model's input for ``raw``; ``rng`` (training only) turns augmentation on."""
        x = self.scaled(raw)
        if rng is not None and self.augment.active:
            x = augment_image(x, self.augment, rng)
        return self.normalized(x)

    def normalized(self, x: np.ndarray) -> np.ndarray:
        """Apply the plan's normalisation to a scaled C x H x W array."""
        if self.mean is not None and self.std is not None:
            x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        return np.ascontiguousarray(x, dtype=np.float32)

    def table(self, row: np.ndarray) -> np.ndarray:
        """The model's input for one table row (float32 features, NaN where missing)."""
        row = np.asarray(row, dtype=np.float32).reshape(-1)
        missing = np.isnan(row)
        if missing.any():
            if self.impute.mode == "none":
                raise PreprocessError("a feature is missing (the plan imputes none)")
            if self.impute.mode == "mean":
                if self.mean is None:
                    raise PreprocessError("--impute mean needs the federation's statistics")
                fill = self.mean
            else:
                fill = np.full(row.shape, self.impute.value, dtype=np.float32)
            row = np.where(missing, fill, row).astype(np.float32)
        if not np.isfinite(row).all():
            raise PreprocessError("a feature is infinite")
        if self.preprocess.standardize == "federation" and self.mean is not None:
            assert self.std is not None
            row = (row - self.mean) / self.std
        if self.impute.indicator:
            row = np.concatenate([row, missing.astype(np.float32)])
        return np.ascontiguousarray(row, dtype=np.float32).reshape(self.input_shape)


def build(
    preprocess: Preprocess, input_shape: tuple[int, ...], augment: Augment | None = None
) -> Preprocessor:
    """The preprocessing of a plan for the federation's input shape.

    ``normalize federation``, ``standardize federation`` and ``impute mean`` use the
    plan's ``federation_mean`` / ``federation_std``; before the stats round wrote them (in
    the stats round itself) the samples are left unnormalised, which is what the stats
    round measures.
    """
    image = len(input_shape) == 3
    if image and input_shape[0] not in (1, 3):
        raise ValueError(f"images need 1 or 3 channels, the input shape has {input_shape[0]}")
    mean, std = _normalization(preprocess, input_shape, image=image)
    return Preprocessor(
        preprocess=preprocess,
        input_shape=tuple(input_shape),
        augment=augment or Augment(),
        mean=mean,
        std=std,
        impute=parse_impute(preprocess.impute),
    )


def _normalization(
    p: Preprocess, input_shape: tuple[int, ...], *, image: bool
) -> tuple[np.ndarray | None, np.ndarray | None]:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    if image:
        spec = parse_normalize(p.normalize)
        if spec == "none":
            return None, None
        if spec == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        elif spec == "federation":
            mean, std = p.federation_mean, p.federation_std
        else:
            assert isinstance(spec, tuple)
            mean, std = spec
        width = input_shape[0]
        if not mean:
            return None, None
        if len(mean) == 3 and width == 1:  # a grey model with RGB statistics: their luma
            mean = (float(np.dot(_LUMA, mean)),)
            std = (float(np.dot(_LUMA, std)),)
    else:
        mean, std = p.federation_mean, p.federation_std
        width = raw_feature_count(p, input_shape)
        if not mean:
            return None, None
    if len(mean) != width:
        raise ValueError(f"the plan's normalisation has {len(mean)} values for {width}")
    return np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)


def _intensity(raw: RawImage, p: Preprocess) -> np.ndarray:
    """Pixels as float32 in [0, 1] by the plan's intensity scaling (H x W [x C])."""
    px = raw.pixels
    if p.intensity == "dicom":
        window = parse_window(p.window) or raw.window
        values = px.astype(np.float32)
        if window is None:  # no window in the plan or the file: the image's own range
            low, high = float(values.min()), float(values.max())
        else:
            center, width = window
            low, high = center - width / 2, center + width / 2
        x = (values - low) / max(high - low, 1e-6)
        x = np.clip(x, 0.0, 1.0)
    elif px.dtype == np.uint8:
        x = px.astype(np.float32) / 255.0
    elif px.dtype == np.uint16 and p.intensity == "16bit":
        x = px.astype(np.float32) / 65535.0
    elif px.dtype == np.uint16:
        raise PreprocessError("a 16-bit image in a plan of 8-bit intensity (--intensity 16bit)")
    else:
        raise PreprocessError(f"{px.dtype} pixels need --intensity dicom")
    if raw.invert:
        x = 1.0 - x
    return x.astype(np.float32, copy=False)


def _channels(x: np.ndarray, channels: int) -> np.ndarray:
    """H x W or H x W x C as ``channels`` x H x W."""
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4):
        raise PreprocessError(f"pixels of shape {x.shape} are not grey, grey+alpha, RGB or RGBA")
    if x.shape[2] in (2, 4):  # drop the alpha channel
        x = x[:, :, : x.shape[2] - 1]
    if x.shape[2] == channels:
        out = x
    elif channels == 3:
        out = np.repeat(x, 3, axis=2)
    else:
        out = (x @ _LUMA)[:, :, None]
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)


def _resize_plane(plane: np.ndarray, size: tuple[int, int], box: _Box | None = None) -> np.ndarray:
    """One H x W float32 plane resized bilinearly to ``size`` = (width, height)."""
    img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    if box is None and img.size == size:
        return plane
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR, box=box), dtype=np.float32)


def _resize_all(x: np.ndarray, size: tuple[int, int], box: _Box | None = None) -> np.ndarray:
    return np.stack([_resize_plane(c, size, box) for c in x])


def _resize(x: np.ndarray, resize: str, height: int, width: int) -> np.ndarray:
    policy, ratio = parse_resize(resize)
    h, w = x.shape[1], x.shape[2]
    if (h, w) == (height, width) and (policy != "shorter-side" or ratio == 1.0):
        return x  # already the input size: every policy leaves it as it is
    if policy == "stretch":
        return _resize_all(x, (width, height))
    if policy == "letterbox":
        scale = min(width / w, height / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        out = np.zeros((x.shape[0], height, width), dtype=np.float32)
        top, left = (height - nh) // 2, (width - nw) // 2
        out[:, top : top + nh, left : left + nw] = _resize_all(x, (nw, nh))
        return out
    # shorter-side: scale so the target, enlarged by 1/ratio, covers the image; centre crop
    scale = max(width / w, height / h) / ratio
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    resized = _resize_all(x, (nw, nh))
    top, left = (nh - height) // 2, (nw - width) // 2
    return np.ascontiguousarray(resized[:, top : top + height, left : left + width])


def augment_image(x: np.ndarray, augment: Augment, rng: np.random.Generator) -> np.ndarray:
    """One training sample's augmentation of a scaled C x H x W array in [0, 1].

    The draws happen in a fixed order whatever is switched on, so one setting never shifts
    another's randomness: crop, flip, rotation, brightness, contrast, noise.
    """
    return augment_with_flip(x, augment, rng)[0]


def augment_with_flip(
    x: np.ndarray, augment: Augment, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """``augment_image``, and whether it flipped the sample left-right (so that boxes in
    it can follow: the ``detect`` task allows no other geometric augmentation)."""
    c, h, w = x.shape
    area, log_ratio = rng.uniform(augment.crop, 1.0), rng.uniform(math.log(3 / 4), math.log(4 / 3))
    at_y, at_x = rng.uniform(), rng.uniform()
    flip = rng.uniform() < 0.5
    angle = float(rng.uniform(-augment.rotate, augment.rotate))
    bright, contrast = rng.uniform(1 - augment.jitter, 1 + augment.jitter, size=2)
    if augment.crop > 0:
        cw = min(w, math.sqrt(area * w * h * math.exp(log_ratio)))
        ch = min(h, math.sqrt(area * w * h / math.exp(log_ratio)))
        x0, y0 = at_x * (w - cw), at_y * (h - ch)
        x = _resize_all(x, (w, h), box=(x0, y0, x0 + cw, y0 + ch))
    if augment.hflip and flip:
        x = x[:, :, ::-1]
    if angle:
        x = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(p), mode="F").rotate(
                        angle, Image.Resampling.BILINEAR, fillcolor=0.0
                    ),
                    dtype=np.float32,
                )
                for p in x
            ]
        )
    if augment.jitter > 0:
        mean = x.mean()
        x = np.clip((x * bright - mean * bright) * contrast + mean * bright, 0.0, 1.0)
    if augment.noise > 0:
        x = x + rng.normal(0.0, augment.noise, size=(c, h, w)).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), bool(augment.hflip and flip)
