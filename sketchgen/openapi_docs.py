"""Write (or check) the services' OpenAPI documents checked in under ``docs/openapi/``.

``python -m sketchgen.openapi_docs`` rewrites ``docs/openapi/ingest.json`` and ``docs/openapi/learner.json``
from the apps themselves (the learner's with the default :class:`~learner.config.LearnConfig` bounds);
``--check`` exits 1 and names the files that differ instead. ``tests/test_http_contract.py`` compares these
files with what running services serve at ``/openapi.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from service_http.openapi import dumps

DOCS = Path(__file__).resolve().parent.parent / "docs" / "openapi"


def documents() -> dict[str, dict[str, Any]]:
    """``{"ingest": …, "learner": …}``: each service's OpenAPI document as its app serves it."""
    from prometheus_client import CollectorRegistry

    from ingest.http_api import make_app as ingest_app
    from learner.config import LearnConfig
    from learner.http_api import make_app as learner_app

    return {"ingest": ingest_app(CollectorRegistry(), None).openapi(),
            "learner": learner_app(None, LearnConfig(stream="documented")).openapi()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sketchgen.openapi_docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a checked-in document is out of date")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder of the documents (default docs/openapi)")
    args = parser.parse_args(argv)
    stale = []
    for name, document in documents().items():
        path = args.out / f"{name}.json"
        text = dumps(document)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        sys.stderr.write(f"out of date (run python -m sketchgen.openapi_docs): {', '.join(stale)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
