"""Reading data files (``.npy``, ``.csv``) and writing sample files, with clear errors."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np

from sketch_store.errors import DataError
from sketch_store.features import validate_rows


def _read_csv(path: Path) -> np.ndarray:
    """Numeric CSV with an optional header row (detected: a first line that is not all numbers)."""
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
        try:
            [float(v) for v in first.strip().split(",")]
            skip = 0
        except ValueError:
            skip = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "input contained no data": reported below instead
            return np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path}: not a numeric CSV ({exc})") from None


def load_data(path: str | Path) -> np.ndarray:
    """Load an (N, d) data array from ``.npy`` or ``.csv``; refuses NaN/Inf and bad shapes."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{p}: not a valid .npy file ({exc})") from None
    elif suffix == ".csv":
        arr = _read_csv(p)
    else:
        raise DataError(f"{p}: unsupported data format {suffix or '(none)'}; use .npy or .csv")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{p}: expected an N×d array of numbers, got shape {arr.shape}")
    try:
        return validate_rows(arr, arr.shape[1])
    except DataError as exc:
        raise DataError(f"{p}: {exc}") from None


def save_samples(path: str, samples: np.ndarray) -> None:
    """Write samples to ``.npy`` or ``.csv``; ``"-"`` writes CSV to standard output."""
    if path == "-":
        buf = io.StringIO()
        np.savetxt(buf, samples, delimiter=",", fmt="%.8g")
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
        return
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        np.save(p, samples)
    elif suffix == ".csv":
        np.savetxt(p, samples, delimiter=",", fmt="%.8g")
    else:
        raise DataError(f"{p}: unsupported output format {suffix or '(none)'}; use .npy, .csv or -")
