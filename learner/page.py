"""The learner's live page: its static files and the server-side binning of samples.

The page (``learner/web/``: ``index.html``, ``app.js``, ``style.css``, hand-written, no CDN)
polls ``/history`` and ``/density``. ``/density`` never ships raw samples: the learner draws
``n`` samples (up to 10⁵) and returns a ``bins × bins`` histogram of one pair of coordinates
and a ``bins``-long histogram per coordinate, so the browser draws at most a few thousand cells
whatever ``n`` is. For a stream of typed records ``/density`` also carries ``categories``: per category or bool
field, how many of the samples took each value (:func:`category_bars`, drawn as bars by the page).

Example
-------
>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(10_000, 3))
>>> out = density_payload(x, 0, 2, bins=16)
>>> len(out["counts"]), len(out["counts"][0]), len(out["marginals"])
(16, 16, 3)
>>> sum(map(sum, out["counts"])) + out["outside"] == 10_000
True
"""

from __future__ import annotations

import collections
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from sketch_store.schema import OTHER

if TYPE_CHECKING:
    from sketch_store.typed_encoding import Encoder

#: Files the page is made of: name → content type (anything else is a 404).
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: Largest ``bins`` accepted by ``/density``.
MAX_BINS = 200
#: Marginals returned at most (the first ones, plus the selected pair).
MAX_MARGINALS = 32
#: Share of mass cut from each tail when choosing a coordinate's plotted range.
TAIL = 0.002


def asset(name: str) -> tuple[bytes, str]:
    """The bytes and content type of one of the page's files; KeyError for any other name."""
    ctype = ASSETS[name]
    return resources.files("learner").joinpath("web", name).read_bytes(), ctype


def plot_range(values: np.ndarray) -> tuple[float, float]:
    """A range holding all but the extreme ``TAIL`` of each side, padded by 5 %; never empty."""
    lo, hi = (float(v) for v in np.quantile(values, [TAIL, 1.0 - TAIL]))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def marginal(values: np.ndarray, dim: int, bins: int) -> dict[str, object]:
    """Histogram of one coordinate over its plotted range."""
    lo, hi = plot_range(values)
    counts, _ = np.histogram(values, bins=bins, range=(lo, hi))
    return {"dim": dim, "lo": lo, "hi": hi, "counts": counts.tolist()}


def density_payload(samples: np.ndarray, x: int, y: int | None, bins: int) -> dict[str, object]:
    """The ``/density`` JSON for ``samples`` (n × d): pair histogram of (x, y) and per-coordinate marginals.

    ``counts[i][j]`` counts samples in x-bin ``i`` and y-bin ``j``; ``outside`` those beyond the
    plotted ranges. With ``y`` None (d = 1) there is no pair histogram, only the marginal.
    """
    n, d = samples.shape
    dims = sorted({*range(min(d, MAX_MARGINALS)), x, *(() if y is None else (y,))})
    out: dict[str, object] = {
        "n": int(n), "d": int(d), "x": x, "y": y, "bins": bins,
        "marginals": [marginal(samples[:, k], k, bins) for k in dims],
        "marginals_truncated": d > len(dims),
        "counts": None, "outside": 0,
    }
    if y is not None:
        xr, yr = plot_range(samples[:, x]), plot_range(samples[:, y])
        counts, _, _ = np.histogram2d(samples[:, x], samples[:, y], bins=bins, range=(xr, yr))
        out.update(x_range=list(xr), y_range=list(yr), counts=counts.astype(np.int64).tolist(),
                   outside=int(n - counts.sum()))
    return out


def field_labels(encoder: Encoder, name: str) -> list[str | None]:
    """The values a bar chart of field ``name`` lists: its categories (``__other__`` under the ``other`` policy) or
    ``false``/``true``, then None (null) when the field is nullable."""
    field = encoder.schema.field(name)
    labels: list[str | None]
    if field.type == "bool":
        labels = ["false", "true"]
    else:
        labels = [*field.categories, *([OTHER] if encoder.stats.unknown == "other" else [])]
    return [*labels, None] if field.nullable else labels


def category_bars(encoder: Encoder, rows: np.ndarray) -> list[dict[str, object]]:
    """Per category or bool field (schema order), ``{"field", "type", "labels", "counts"}`` over the encoded ``rows``.

    ``counts[i]`` is how many rows decode to ``labels[i]`` (null is the label None), the rows read exactly as
    :meth:`~sketch_store.typed_encoding.Encoder.decode_many` reads them for ``/sample``; the counts sum to the
    number of rows. Numeric fields are left to the marginals (docs/learner.md, "The live page").
    """
    fields = [f for f in encoder.schema.fields if f.type in ("category", "bool")]
    if not fields:
        return []
    records = encoder.decode_many(rows, nested=False)
    out = []
    for field in fields:
        seen = collections.Counter(_label(r[field.name]) for r in records)
        labels = field_labels(encoder, field.name)
        out.append({"field": field.name, "type": field.type, "labels": labels,
                    "counts": [int(seen.get(label, 0)) for label in labels]})
    return out


def _label(value: object) -> str | None:
    """A decoded category or bool value as its bar's label (``true``/``false``; None stays None)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if value is None else str(value)
