"""A mixed-type table through the streaming service against the same table offline, in one run.

For each table (bench/_tabular_data.py, the same seeded 80/20 split as bench/tabular.py):

* **offline**: ``sketchgen sketch TRAIN.csv`` → ``fit --seconds T`` → ``sample M`` (what bench/tabular.py runs);
* **stream**: on the embedded stack (a Tansu broker and a Redis server started here, as ``sketchgen up`` does),
  ``sketchgen create NAME --estimate-from TRAIN.csv`` → ``produce TOPIC --file TRAIN.csv`` → ``ingest`` until the
  stream's count is the training rows → ``learn`` for T seconds → ``sample NAME``.

Both are the CLI with no tuning flag, each sampling as many records as the holdout, scored against the holdout by
:func:`sketchgen.quality_report.quality_scores` (docs/learner.md, "Quality report"). The learner gets the same T as
``fit`` once the whole table is in the sketch (it runs from then on, not during the ingest). The table printed:
SDMetrics overall score of each and their difference in points (stream − offline), column shapes, pair trends,
classifier AUC, the share of numeric cells outside the training range, the learner's steps. Outputs
docs/bench/tabular_stream.md and .json.

Run: ``nice -n 19 .venv/bin/python bench/tabular_stream.py`` (about 4 × 2 × T, 25 min at T = 180 s; needs the
``tabular`` extra). Smoke run: ``.venv/bin/python bench/tabular_stream.py --quick --tables penguins --out-dir /tmp/t``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._tabular_data import DEFAULT_TABLES, TABLES  # noqa: E402
from bench.tabular import cli, out_of_range_share, prepare, run_ours, score  # noqa: E402
from sketch_store.schema import Schema  # noqa: E402
from sketchgen.client import LearnerClient, LearnerError  # noqa: E402
from sketchgen.local_stack import LocalStack, free_port  # noqa: E402

log = logging.getLogger("bench.tabular_stream")

DEFAULT_SECONDS = 180.0
QUICK_SECONDS = 5.0
#: Longest wait for the ingest worker to fold the whole table.
INGEST_TIMEOUT = 600.0


def stream_count(name: str) -> int:
    """The stream's folded record count, from ``sketchgen status --json``."""
    proc = subprocess.run([sys.executable, "-m", "sketchgen", "status", name, "--json"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    return int(json.loads(proc.stdout)["count"]) if proc.returncode == 0 else 0


def spawn(*argv: str, log_file: Path) -> subprocess.Popen:
    """``python -m sketchgen ARGV`` in the background, its output in ``log_file``."""
    out = log_file.open("w")
    return subprocess.Popen([sys.executable, "-m", "sketchgen", *argv], cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """SIGTERM (a clean stop), then SIGKILL past ``timeout``; the exit code."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def wait_for_count(name: str, want: int, worker: subprocess.Popen) -> float:
    """Seconds until the stream's count reaches ``want``; raises if the worker exits or the wait times out."""
    t0 = time.perf_counter()
    while stream_count(name) < want:
        if worker.poll() is not None:
            raise RuntimeError(f"the ingest worker exited {worker.returncode} before the table was in")
        if time.perf_counter() - t0 > INGEST_TIMEOUT:
            raise RuntimeError(f"the stream {name} did not reach {want} records in {INGEST_TIMEOUT:.0f} s")
        time.sleep(0.5)
    return time.perf_counter() - t0


def learner_steps(port: int) -> int | None:
    """The learner's trained steps from its ``/status`` (None if it does not answer)."""
    try:
        steps = LearnerClient(f"http://127.0.0.1:{port}", timeout=5).status().get("steps")
    except LearnerError:
        return None
    return int(steps) if isinstance(steps, int) else None


def learn(name: str, seconds: float, work: Path) -> int | None:
    """Run ``sketchgen learn`` for ``seconds`` after its first model, then stop it; its steps then."""
    port = free_port()
    learner = spawn("learn", name, "--port", str(port), log_file=work / "learn.log")
    try:
        t0 = time.perf_counter()
        while learner_steps(port) is None:
            if learner.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError(f"the learner did not come up; see {work / 'learn.log'}")
            time.sleep(0.2)
        time.sleep(seconds)
        steps = learner_steps(port)
    finally:
        code = stop(learner)
    if code != 0:
        raise RuntimeError(f"the learner exited {code}; see {work / 'learn.log'}")
    return steps


def run_stream(facts: dict, work: Path, seconds: float, seed: int) -> dict:
    """The table through create → produce → ingest → learn → sample on a fresh embedded stack."""
    work.mkdir(parents=True, exist_ok=True)
    name, topic, samples = "tabular", "tabular-rows", work / "F.csv"
    with LocalStack() as stack:
        os.environ["SKETCHGEN_KAFKA"], os.environ["SKETCHGEN_REDIS"] = stack.bootstrap, stack.redis_url
        cli("create", name, "--estimate-from", facts["train"])
        cli("produce", topic, "--file", facts["train"])
        worker = spawn("ingest", name, "--topic", topic, log_file=work / "ingest.log")
        try:
            ingest_seconds = wait_for_count(name, facts["n_train"], worker)
            steps = learn(name, seconds, work)
        finally:
            stop(worker)
        cli("sample", name, "-n", str(facts["n_holdout"]), "--out", str(samples), "--seed", str(seed))
    return {"ingest_seconds": ingest_seconds, "learner_steps": steps, "samples": str(samples)}


def run_table(table: str, work: Path, seconds: float, seed: int) -> dict:
    """Offline and streamed runs of one table, both scored against its holdout."""
    facts = prepare(table, work, seed)
    row: dict = {"table": table, "source": TABLES[table].source, "seconds": seconds, "seed": seed,
                 "n_train": facts["n_train"], "n_holdout": facts["n_holdout"]}
    log.info("%s: offline ...", table)
    (work / "offline").mkdir(exist_ok=True)
    offline = run_ours({**facts, "seconds": seconds, "seed": seed, "n": facts["n_holdout"],
                        "work": str(work / "offline")})
    log.info("%s: stream ...", table)
    stream = run_stream(facts, work / "stream", seconds, seed)
    schema = Schema.load(facts["schema"])
    for label, run in (("offline", offline), ("stream", stream)):
        row[label] = {**{k: v for k, v in run.items() if k != "samples"}, **score(facts, run["samples"], seed),
                      "out_of_range": out_of_range_share(facts["train"], run["samples"], schema)}
    row["difference_points"] = 100 * (overall(row["stream"]) - overall(row["offline"]))
    log.info("%s: offline %.3f, stream %.3f", table, overall(row["offline"]), overall(row["stream"]))
    return row


def overall(run: dict) -> float:
    """SDMetrics' overall score of a scored run."""
    return float(run["scores"]["sdmetrics"]["overall"])


def table_lines(rows: list[dict]) -> list[str]:
    """A Markdown table: per table, each run's scores and the difference."""
    head = ("| table | rows | run | overall | column shapes | pair trends | classifier AUC | out of range "
            "| learner steps |\n|---|---:|---|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for row in rows:
        for label in ("offline", "stream"):
            s, sdm = row[label]["scores"], row[label]["scores"]["sdmetrics"]
            steps = row[label].get("learner_steps")
            lines.append(f"| {row['table']} | {row['n_train']} | {label} | {sdm['overall']:.3f} | "
                         f"{sdm['column_shapes']:.3f} | {sdm['column_pair_trends']:.3f} | {s['classifier_auc']:.3f} | "
                         f"{100 * row[label]['out_of_range']:.1f} % | "
                         f"{'' if steps is None else steps} |")
        lines.append(f"| {row['table']} | | **stream − offline** | **{row['difference_points']:+.1f} points** "
                     "| | | | | |")
    return lines


def write_outputs(rows: list[dict], out_dir: Path, command: str) -> None:
    """docs/bench/tabular_stream.md (table + command) and .json (every figure)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tabular_stream.json").write_text(json.dumps(rows, indent=2))
    worst = max(abs(r["difference_points"]) for r in rows)
    text = ["# Typed tables: the streaming service against offline `sketch` → `fit`", "",
            f"Command: `{command}`", "", f"T = {rows[0]['seconds']:g} s for `fit` and for `learn`; "
            f"largest gap {worst:.1f} points.", "", *table_lines(rows), ""]
    (out_dir / "tabular_stream.md").write_text("\n".join(text))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", nargs="+", choices=sorted(TABLES), default=list(DEFAULT_TABLES))
    p.add_argument("--seconds", type=float, default=None, help=f"fit/learn budget (default {DEFAULT_SECONDS:g})")
    p.add_argument("--quick", action="store_true", help=f"a smoke run ({QUICK_SECONDS:g} s budgets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temporary dir)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "bench")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tabular-stream-"))
    rows = [run_table(t, work / t, seconds, args.seed) for t in args.tables]
    lines = table_lines(rows)
    print("\n".join(lines))
    write_outputs(rows, args.out_dir, "python bench/tabular_stream.py " + " ".join(argv or sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
