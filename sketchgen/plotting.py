"""Fig. 2-style plots: 2-D histograms of data and generated samples side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sketch_store.errors import DataError


def plot_histograms(
    panels: list[tuple[str, np.ndarray]],
    out: str | Path,
    dims: tuple[int, int] = (0, 1),
    bins: int = 100,
) -> Path:
    """Save one 2-D histogram per ``(title, samples)`` panel, on shared axes, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    i, j = dims
    for title, x in panels:
        if x.ndim != 2 or max(i, j) >= x.shape[1]:
            raise DataError(f"{title}: cannot plot coordinates {dims} of data with shape {x.shape}")
    stacked = np.concatenate([x[:, [i, j]] for _, x in panels])
    lo = np.quantile(stacked, 0.001, axis=0)
    hi = np.quantile(stacked, 0.999, axis=0)
    pad = 0.05 * (hi - lo + 1e-12)
    extent = [[lo[0] - pad[0], hi[0] + pad[0]], [lo[1] - pad[1], hi[1] + pad[1]]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, x) in zip(axes[0], panels, strict=True):
        ax.hist2d(x[:, i], x[:, j], bins=bins, range=extent, cmap="viridis")
        ax.set_title(f"{title} (n={x.shape[0]})")
        ax.set_xlabel(f"x[{i}]")
        ax.set_ylabel(f"x[{j}]")
        ax.set_aspect("equal", adjustable="box")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
