"""The ``sketchgen`` command line: one entry point, one sub-command per job.

Every user-caused error (missing file, bad shape, NaN in data, mismatched
sketch and model, …) prints one line ``sketchgen: error: …`` and exits 2.

Every sub-command accepts the connection options (``--kafka``, ``--redis``, Kafka security,
``--redis-password-file``: :mod:`sketchgen.settings`); those of a service it does not use are ignored.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sketch_store.errors import SketchgenError
from sketchgen.demo import add_demo_command
from sketchgen.offline import add_offline_commands
from sketchgen.produce import add_produce_command
from sketchgen.report_command import add_report_command
from sketchgen.schema_command import add_schema_command
from sketchgen.streaming import add_streaming_commands

log = logging.getLogger("sketchgen")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="sketchgen",
        description="Learn a generative network from a data stream's sketch, never storing the data.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_offline_commands(sub)
    add_streaming_commands(sub)
    add_produce_command(sub)
    add_demo_command(sub)
    add_schema_command(sub)
    add_report_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:  # kafka-python logs every connection at INFO
        logging.getLogger("kafka").setLevel(logging.WARNING)
    # Even with -v: kafka-python's protocol parser logs every request at DEBUG, and a SASL
    # authenticate request carries the credentials (in the clear for PLAIN).
    logging.getLogger("kafka.protocol.parser").setLevel(logging.INFO)
    try:
        return int(args.func(args) or 0)
    except SketchgenError as exc:
        print(f"sketchgen: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sketchgen: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sketchgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
