"""Real data for demos and simulations: scikit-learn's bundled handwritten digits (UCI).

The file is read straight from the installed scikit-learn package (no import of sklearn,
no network): 1,797 8x8 grey-scale digits, values 0..16, ten classes.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError

DIGIT_CLASSES = tuple(str(d) for d in range(10))


def digits_file() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "the demo data set ships with scikit-learn, which is not installed",
            code=Code.DEMO_DATA,
            hint="pip install 'flsilo[demo]' (or scikit-learn)",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.exists():
        raise UsageError(f"scikit-learn has no digits data at {path}", code=Code.DEMO_DATA)
    return path


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """x: float32 (1797, 1, 8, 8) in [0, 1]; y: int64 class indices."""
    with gzip.open(digits_file(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    x = (table[:, :64] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = table[:, 64].astype(np.int64)
    return x, y
