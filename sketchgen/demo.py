"""``sketchgen demo``: the whole service on the embedded stack, on one machine.

Starts Tansu and Redis on free ports, creates a stream from a pilot sample of a dataset,
produces a live stream into Kafka, runs one ingest worker and one learner as child
processes (``sketchgen ingest`` / ``sketchgen learn``), prints the live page's URL first, then
where metrics, status and samples are and progress every few seconds, and at the end writes a
data-vs-samples PNG and stops everything.
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
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ingest.kafka_connect import DEMO_SETTINGS, ensure_topic, record_producer
from ingest.kafka_security import ENV_VARS as KAFKA_SECURITY_ENV
from ingest.kafka_security import KafkaSecurity
from sketch_store.errors import SketchgenError
from sketch_store.pilot import spec_from_pilot
from sketch_store.redis_connect import connect, redact_url
from sketch_store.redis_store import SketchStore
from sketchgen.client import LearnerClient, LearnerError
from sketchgen.datasets import DATASETS, make_dataset
from sketchgen.local_stack import LocalStack
from sketchgen.plotting import plot_histograms
from sketchgen.settings import REDIS_SECRET_ENV, add_connection_args

log = logging.getLogger("sketchgen")


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole service on the embedded stack with a live demo stream")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--dataset", choices=DATASETS, default="spiral", help="demo data (default spiral)")
    p.add_argument("--rate", type=float, default=2000.0, help="rows per second produced (default 2000)")
    p.add_argument("--port", type=int, default=8000, help="learner HTTP port (default 8000)")
    p.add_argument("--out", default="demo.png", help="data-vs-samples PNG written at the end (default demo.png)")
    add_connection_args(p, kafka=False, redis=False)  # it runs its own servers
    p.set_defaults(func=cmd_demo)


def demo_child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without Kafka security and Redis password settings (the embedded stack uses neither)."""
    return {k: v for k, v in environ.items() if k not in (*KAFKA_SECURITY_ENV, *REDIS_SECRET_ENV)}


def _produce(bootstrap: str, topic: str, dataset: str, rate: float, stop: threading.Event) -> None:
    producer = record_producer(bootstrap, KafkaSecurity(), DEMO_SETTINGS)  # the stack is plaintext
    rng = np.random.default_rng()
    start, sent = time.monotonic(), 0
    try:
        while not stop.is_set():
            for row in make_dataset(dataset, 200, seed=int(rng.integers(2**31))):
                producer.send(topic, json.dumps(row.tolist()).encode())
            sent += 200
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                stop.wait(ahead)
    finally:
        producer.close(timeout=5)


def _status(learner: LearnerClient) -> dict[str, object]:
    """The learner's ``/status``; empty while it does not answer (starting up)."""
    try:
        return learner.status()
    except LearnerError:
        return {}


def _samples(learner: LearnerClient, n: int) -> np.ndarray | None:
    """``n`` samples from the learner; None (logged) if it has none to give."""
    try:
        return learner.sample(n)
    except LearnerError as exc:
        log.warning("no samples for the plot: %s", exc)
        return None


def cmd_demo(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    name, topic = f"demo-{args.dataset}", f"demo-{args.dataset}"
    base = f"http://127.0.0.1:{args.port}"
    learner = LearnerClient(base, timeout=30)
    print(f"sketchgen demo: open {base}/ to watch the generator learn (the live page; up in a few seconds)",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="sketchgen-demo-") as tmp, LocalStack(Path(tmp) / "stack") as stack:
        store = SketchStore(connect(stack.redis_url))
        spec = spec_from_pilot(make_dataset(args.dataset, 5000, seed=0), name=name)
        store.create_stream(spec, replace=True)
        ensure_topic(stack.bootstrap, topic, 4, KafkaSecurity())
        # the embedded servers have no credentials: those meant for another cluster must not reach the children
        env = demo_child_env(os.environ)
        env.update(SKETCHGEN_KAFKA=stack.bootstrap, SKETCHGEN_REDIS=stack.redis_url)
        cli = [sys.executable, "-m", "sketchgen", "-q"]
        logs = {k: open(Path(tmp) / f"{k}.log", "wb") for k in ("ingest", "learn")}
        children = [
            subprocess.Popen([*cli, "ingest", name, "--topic", topic, "--metrics-port", "0"], env=env,
                             stdout=logs["ingest"], stderr=subprocess.STDOUT),
            subprocess.Popen([*cli, "learn", name, "--port", str(args.port)], env=env,
                             stdout=logs["learn"], stderr=subprocess.STDOUT),
        ]
        producer = threading.Thread(target=_produce, args=(stack.bootstrap, topic, args.dataset, args.rate, stop),
                                    daemon=True)
        producer.start()
        print(f"  stream {name!r} ({spec.describe()})", flush=True)
        print(f"  status   {base}/status\n  samples  {base}/sample?n=1000\n  metrics  {base}/metrics", flush=True)
        print(f"  Kafka {stack.bootstrap}, Redis {redact_url(stack.redis_url)}; Ctrl-C to stop", flush=True)
        start = time.monotonic()
        try:
            while not stop.wait(5.0):
                for child, label in zip(children, ("ingest", "learn"), strict=True):
                    if child.poll() is not None:
                        log_text = (Path(tmp) / f"{label}.log").read_text(errors="replace")[-2000:]
                        raise SketchgenError(f"the {label} process exited ({child.returncode}):\n{log_text}")
                st = _status(learner)
                loss, drift = st.get("loss"), st.get("drift_score")
                print(f"  {time.monotonic() - start:5.0f}s  records {store.total_count(name):>9,}  "
                      f"loss {'(first round)' if loss is None else f'{loss:.2e}'}  "
                      f"drift {'(needs a minute of reference data)' if drift is None else f'{drift:.2f}'}",
                      flush=True)
                if args.duration and time.monotonic() - start >= args.duration:
                    break
            samples = _samples(learner, 20_000)
            if samples is not None:
                plot_histograms([("data", make_dataset(args.dataset, 20_000, seed=1)), ("generated", samples)],
                                args.out)
                print(f"wrote {args.out}: the data beside 20 000 generated samples", flush=True)
        finally:
            stop.set()
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
            for f in logs.values():
                f.close()
            producer.join(10)
    return 0
