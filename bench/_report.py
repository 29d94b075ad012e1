"""Shared output helpers for the benchmarks: markdown tables, printed and saved under docs/bench/."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch

DOCS = Path(__file__).resolve().parent.parent / "docs" / "bench"


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    """One line describing where the numbers come from."""
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, NumPy {np.__version__}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}"
    )


def write_report(name: str, title: str, body: str, command: str) -> Path:
    """Print ``body`` and save it as ``docs/bench/<name>.md`` with a header naming the command."""
    text = f"# {title}\n\nMeasured with `{command}` on {machine()}.\n\n{body}\n"
    print(text)
    DOCS.mkdir(parents=True, exist_ok=True)
    path = DOCS / f"{name}.md"
    path.write_text(text)
    return path
