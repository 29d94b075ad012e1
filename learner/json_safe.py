"""JSON that never carries NaN or Infinity: what every learner endpoint answers with.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which is not JSON: browsers'
``JSON.parse`` and most clients refuse the whole reply. A diverged loss, an infinite drift
score or a model producing non-finite samples must not break ``/status``, ``/history``,
``/sample`` or ``/density``, so :func:`dumps` maps every non-finite float to ``null``
(recursively, numpy values included) and then encodes with ``allow_nan=False``.

Example
-------
>>> import numpy as np
>>> dumps({"loss": float("nan"), "drift": np.float32("inf"), "x": np.array([[1.0, np.nan]]), "n": np.int64(3)})
b'{"loss": null, "drift": null, "x": [[1.0, null]], "n": 3}'
"""

from __future__ import annotations

import json
import math

import numpy as np


def finite(value: object) -> object:
    """``value`` with every non-finite float replaced by None and numpy values made plain Python."""
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _finite_array(value)
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _finite_array(array: np.ndarray) -> object:
    """A numpy array as nested lists, non-finite entries as None (fast when all are finite)."""
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        cleaned = array.astype(object)
        cleaned[~np.isfinite(array)] = None
        return cleaned.tolist()
    if array.dtype.kind == "O":
        return [finite(v) for v in array.tolist()]
    return array.tolist()


def dumps(value: object) -> bytes:
    """UTF-8 JSON of ``value`` with non-finite floats as ``null``; never emits NaN or Infinity."""
    return json.dumps(finite(value), allow_nan=False).encode()
