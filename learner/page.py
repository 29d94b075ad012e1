"""The learner's live page: its static files and the server-side binning of samples.

The page (``learner/web/``: ``index.html``, ``app.js``, ``style.css``, hand-written, no CDN)
polls ``/history`` and ``/density``. ``/density`` never ships raw samples: the learner draws
``n`` samples (up to 10⁵) and returns a ``bins × bins`` histogram of one pair of coordinates
and a ``bins``-long histogram per coordinate, so the browser draws at most a few thousand cells
whatever ``n`` is.

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

from importlib import resources

import numpy as np

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
