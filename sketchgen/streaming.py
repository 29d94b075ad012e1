"""The streaming commands: ``create``, ``ingest``, ``status`` and ``export``.

``create`` designs a stream's spec from ``--dim`` or a pilot file (``--estimate-from``), which may hold typed
records (with ``--schema``, or a schema inferred from a ``.jsonl`` or a ``.csv`` with a non-numeric header):
the stream then takes JSON objects of those fields (docs/ingest.md, "Typed records").
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from ingest.config import ENV_STOP_TIMEOUT, IngestConfig, resolve_stop_timeout
from learner.config import LearnConfig
from sketch_store.bounds import Bounds
from sketch_store.buckets import DEFAULT_BUCKETS, LEVELS, BucketConfig
from sketch_store.errors import DataError, SketchgenError
from sketch_store.frequency_laws import LAWS
from sketch_store.memory_budget import StreamMemory, human_bytes, stream_memory
from sketch_store.pilot import (
    DEFAULT_KERNEL,
    DEFAULT_LAW,
    DEFAULT_M,
    DEFAULT_M_HIGH_DIM,
    KERNELS,
    LOW_DIM,
    default_m,
    spec_from_pilot,
)
from sketch_store.redis_connect import check_reachable, connect
from sketch_store.redis_keys import validate_stream_name
from sketch_store.redis_store import SketchStore
from sketch_store.sketch import save_sketch
from sketch_store.spec import SketchSpec
from sketch_store.typed_encoding import UNKNOWN_POLICIES
from sketchgen.config_defaults import default
from sketchgen.datafiles import load_data
from sketchgen.settings import Connections, add_connection_args, add_http_auth_args, resolve_http_auth
from sketchgen.typed_files import reads_records, typed_sketch_input

log = logging.getLogger("sketchgen")


def add_streaming_commands(sub: argparse._SubParsersAction) -> None:
    """Register the streaming sub-commands."""
    add_up_command(sub)
    add_learn_command(sub)
    p = sub.add_parser("create", help="create a stream (its sketch spec) in Redis")
    p.add_argument("name", help="stream name")
    p.add_argument("--dim", type=int, help="data dimension d (required without --estimate-from, else checked)")
    p.add_argument("--m", type=int, help=f"number of frequencies (default {DEFAULT_M} for d <= {LOW_DIM}, "
                   f"{DEFAULT_M_HIGH_DIM} above: docs/beyond_paper.md)")
    p.add_argument("--law", choices=LAWS, default=DEFAULT_LAW, help=f"frequency law (default {DEFAULT_LAW})")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--sigma", type=float, help="scale σ (in standardised units with --estimate-from)")
    scale.add_argument("--estimate-from", metavar="FILE",
                       help="pilot data (.npy/.csv, or typed records in .csv with a header or .jsonl): "
                       "standardisation (or the records' encoding) and σ")
    p.add_argument("--schema", metavar="FILE", help="schema of typed records (from `sketchgen schema`; needs "
                   "--estimate-from; default: inferred from a .jsonl or a non-numeric .csv pilot)")
    p.add_argument("--unknown", choices=UNKNOWN_POLICIES, help="typed records: a category outside the schema is "
                   "refused (reject, the default) or sketched as __other__ (other)")
    p.add_argument("--kernel", choices=KERNELS, default=DEFAULT_KERNEL,
                   help=f"with --estimate-from: a ladder of scales read off the pilot, or one σ "
                   f"(default {DEFAULT_KERNEL})")
    p.add_argument("--seed", type=int, default=0, help="seed of the frequency draw (default 0)")
    p.add_argument("--replace", action="store_true", help="delete an existing stream of that name and its data")
    add_bucket_args(p)
    add_connection_args(p, kafka=False)
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("ingest", help="run an ingest worker (Kafka → Redis sketch) until SIGTERM/SIGINT")
    p.add_argument("name", help="stream name")
    p.add_argument("--topic", required=True, help="Kafka topic to consume")
    p.add_argument("--group", help="consumer group (default sketchgen-NAME)")
    p.add_argument("--dlq", help="dead-letter topic (default TOPIC.dlq)")
    add_ingest_tuning_args(p)
    add_http_auth_args(p)
    add_connection_args(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("status", help="show a stream's spec, counts, partitions, buckets and memory")
    p.add_argument("name", help="stream name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_args(p, kafka=False)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("export", help="write a stream's sketch to SKETCH.npz (the format `sketchgen fit` reads)")
    p.add_argument("name", help="stream name")
    p.add_argument("--out", required=True, help="output sketch file (.npz)")
    window = p.add_mutually_exclusive_group()
    window.add_argument("--window", type=float, metavar="SECONDS", help="only records of the last SECONDS")
    window.add_argument("--halflife", type=float, metavar="SECONDS", help="exponentially decayed, half-life SECONDS")
    add_connection_args(p, kafka=False)
    p.set_defaults(func=cmd_export)


def add_bucket_args(p: argparse.ArgumentParser) -> None:
    """``--LEVEL-bucket`` (resolution) and ``--LEVEL-keep`` (retention) of each bucket level, defaults from
    :data:`DEFAULT_BUCKETS` (docs/ingest.md, "Memory of a stream")."""
    for i, level in enumerate(DEFAULT_BUCKETS.levels):
        off = "" if i == 0 else "; 0: no such level"
        p.add_argument(f"--{level.name}-bucket", type=int, default=level.seconds,
                       help=f"{level.name} time bucket, seconds (default {level.seconds}{off})")
        p.add_argument(f"--{level.name}-keep", type=int, default=level.keep,
                       help=f"{level.name} bucket retention, seconds (default {level.keep})")


def buckets_from_args(args: argparse.Namespace) -> BucketConfig:
    """The bucket levels the ``create`` flags set (a level other than fine with ``--LEVEL-bucket 0`` is left out);
    refuses, in one line, an invalid config or a level no read would use."""
    fields: dict[str, int | None] = {}
    for i, name in enumerate(LEVELS):
        seconds, keep = getattr(args, f"{name}_bucket"), getattr(args, f"{name}_keep")
        off = i > 0 and seconds == 0
        fields[f"{name}_seconds"], fields[f"{name}_keep"] = (None, None) if off else (seconds, keep)
    try:
        cfg = BucketConfig(**fields)
    except SketchgenError as exc:
        raise DataError(f"{exc} (see --LEVEL-bucket / --LEVEL-keep)") from None
    for level in cfg.redundant():
        raise DataError(f"the {level.name} bucket level is kept {level.keep} s, no longer than the level before it, "
                        f"so no read would use it: raise --{level.name}-keep or drop it with --{level.name}-bucket 0")
    return cfg


def memory_line(memory: StreamMemory, per_partition: int) -> str:
    """``memory at full retention: 41.0 MB (40 960 123 bytes): 819 buckets (fine 361, …) + 49.8 kB per partition``."""
    levels = ", ".join(f"{lv.level} {lv.buckets}" for lv in memory.levels)
    n = sum(lv.buckets for lv in memory.levels)
    return (f"memory at full retention: {human_bytes(memory.total)} ({memory.total} bytes) in Redis: {n} buckets "
            f"({levels}) + {human_bytes(per_partition)} per partition")


def spec_memory(spec: SketchSpec, buckets: BucketConfig, partitions: int, name: str) -> StreamMemory:
    """:func:`stream_memory` of a stream with this spec and bucket levels."""
    return stream_memory(spec.m, spec.d, len(spec.to_bytes()), buckets, partitions, name=name)


def add_up_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run the embedded local stack (Tansu Kafka broker + Redis) until Ctrl-C")
    p.add_argument("--kafka-port", type=int, default=9092, help="Kafka port on 127.0.0.1 (default 9092)")
    p.add_argument("--redis-port", type=int, default=6379, help="Redis port on 127.0.0.1 (default 6379)")
    p.add_argument("--data-dir", help="keep Redis data (AOF) here across runs (default: a temporary directory)")
    add_connection_args(p, kafka=False, redis=False)  # it runs its own servers
    p.set_defaults(func=cmd_up)


def cmd_up(args: argparse.Namespace) -> int:
    from sketchgen.local_stack import run_up

    run_up(kafka_port=args.kafka_port, redis_port=args.redis_port, data_dir=args.data_dir)
    return 0


def add_learn_command(sub: argparse._SubParsersAction) -> None:
    """``sketchgen learn``: its flags' defaults are :class:`LearnConfig`'s (:mod:`sketchgen.config_defaults`)."""
    p = sub.add_parser("learn", help="keep a generator fitted to a stream's live sketch (leader or hot standby)")
    p.add_argument("name", help="stream name")
    p.add_argument("--port", type=int, default=8000, help="HTTP port: /metrics /healthz /readyz /sample /status")

    def learn_option(flag: str, help_text: str, **kwargs: object) -> None:
        field = flag.lstrip("-").replace("-", "_")
        p.add_argument(flag, default=default(LearnConfig, field), help=help_text, **kwargs)  # type: ignore[arg-type]

    learn_option("--target", f"all, window:SECONDS or halflife:SECONDS (default {default(LearnConfig, 'target')})")
    learn_option("--steps-per-round", f"Adam steps per round (default {default(LearnConfig, 'steps_per_round')})",
                 type=int)
    learn_option("--checkpoint-every",
                 f"seconds between checkpoints (default {default(LearnConfig, 'checkpoint_every'):g})", type=float)
    learn_option("--device", "default: cuda if present", choices=("auto", "cpu", "cuda"))
    learn_option("--lease-ttl", f"leader lease, seconds (default {default(LearnConfig, 'lease_ttl'):g})", type=float)
    learn_option("--drift-false-alarms-per-day",
                 "expected drift alarms per day on a stationary stream; sets the calibrated threshold and the CUSUM "
                 f"(default {default(LearnConfig, 'drift_false_alarms_per_day'):g})", type=float, metavar="F")
    learn_option("--drift-threshold", "a fixed drift-score threshold instead of the calibrated one (default: "
                 "calibrated)", type=float)
    learn_option("--history-size", "points kept for /history and the live page", type=int)
    learn_option("--max-concurrent-samples", "/sample and /density requests sampling at once; more get 429 "
                 f"(default {default(LearnConfig, 'max_concurrent_samples')})", type=int, metavar="N")
    add_http_auth_args(p)
    add_connection_args(p, kafka=False)
    p.set_defaults(func=cmd_learn)


def add_ingest_tuning_args(p: argparse.ArgumentParser) -> None:
    """``sketchgen ingest``'s worker flags, defaults from :class:`IngestConfig` (``--stop-timeout``: also env)."""
    p.add_argument("--metrics-port", type=int, default=default(IngestConfig, "metrics_port"),
                   help="serve /metrics (Prometheus), /healthz and /readyz on this port (0: off)")
    stall = default(IngestConfig, "stall_timeout_s")
    p.add_argument("--stall-timeout", type=float, default=stall, metavar="SECONDS",
                   help=f"/healthz answers 503 when the consume loop has not turned for this long (default {stall:g})")
    p.add_argument("--stop-timeout", type=float, metavar="SECONDS",
                   help="on SIGTERM, retry the final flush through a Redis outage this long, then exit 2 (env "
                        f"{ENV_STOP_TIMEOUT}, default {default(IngestConfig, 'stop_timeout_s'):g}; keep it below "
                        "the pod's terminationGracePeriodSeconds)")
    flush_ms, flush_records = default(IngestConfig, "flush_ms"), default(IngestConfig, "flush_records")
    p.add_argument("--flush-ms", type=int, default=flush_ms, help=f"flush to Redis at least this often (default "
                   f"{flush_ms})")
    p.add_argument("--flush-records", type=int, default=flush_records, help=f"or after this many rows (default "
                   f"{flush_records})")
    max_bytes = default(IngestConfig, "max_value_bytes")
    p.add_argument("--max-record-bytes", type=int, default=max_bytes,
                   help=f"reject larger record values (default {human_mib(max_bytes)})")


def human_mib(n: int) -> str:
    """``4 MiB`` for a whole number of MiB, else the bytes."""
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n} bytes"


def cmd_learn(args: argparse.Namespace) -> int:
    import signal

    from learner.http_api import serve
    from learner.service import LearnerService

    auth = resolve_http_auth(args)  # token files read now: a missing or empty one fails before Redis
    config = LearnConfig(
        stream=args.name, target=args.target, steps_per_round=args.steps_per_round,
        checkpoint_every=args.checkpoint_every, device=args.device, lease_ttl=args.lease_ttl,
        drift_false_alarms_per_day=args.drift_false_alarms_per_day, drift_threshold=args.drift_threshold,
        history_size=args.history_size,
        max_concurrent_samples=args.max_concurrent_samples,
    )
    service = LearnerService(config, open_store(Connections.from_args(args)))
    try:
        server = serve(service, args.port, auth=auth)
    except OSError as exc:
        raise SketchgenError(f"cannot serve HTTP on port {args.port}: {exc.strerror or exc}") from None

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s: checkpointing and stopping", signal.Signals(signum).name)
        service.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        service.run()
    finally:
        server.shutdown()
    return 0


def open_store(conn: Connections) -> SketchStore:
    """A store on a reachable Redis (with the resolved password), or one clear error without the password."""
    check_reachable(conn.redis, conn.redis_password)
    return SketchStore(connect(conn.redis, conn.redis_password), durability=conn.redis_durability)


def check_create_args(args: argparse.Namespace) -> None:
    """Refuse inconsistent ``create`` flags in one line: ``--dim`` or a pilot gives d; ``--schema`` needs a pilot."""
    if (args.dim is not None and args.dim < 1) or (args.m is not None and args.m < 1):
        raise DataError("--dim and --m must be >= 1")
    if args.schema is not None and not args.estimate_from:
        raise DataError("--schema needs --estimate-from FILE: the encoding's means and stds need a pilot file "
                        "of records (.csv or .jsonl) to be fitted on")
    if args.dim is None and not args.estimate_from:
        raise DataError("give --dim D, or --estimate-from FILE (with --schema F for typed records) to read d from")
    if args.unknown is not None and not args.estimate_from:
        raise DataError("--unknown applies to typed records: give their pilot with --estimate-from")


def pilot_spec(args: argparse.Namespace) -> SketchSpec:
    """The spec designed on ``--estimate-from``: typed records (:func:`typed_spec_from_pilot`) or vectors.

    A ``.jsonl``, a ``.csv`` with a non-numeric header or any pilot with ``--schema`` is read as records
    (:mod:`sketchgen.typed_files`); a schema of plain floats gives today's numeric spec (docs/design.md §1).
    """
    path = Path(args.estimate_from)
    if reads_records(path, args.schema):
        spec, _ = typed_sketch_input(path, args.schema, m=args.m, law=args.law, seed=args.seed, kernel=args.kernel,
                                     unknown=args.unknown or "reject", name=args.name)
        if spec.schema is None and args.unknown is not None:
            raise DataError("--unknown applies to typed records; this pilot's schema is all float fields")
        what = "the schema's encoding gives" if spec.encoder is not None else "pilot data have"
    else:
        if args.unknown is not None:
            raise DataError(f"--unknown applies to typed records; {path} holds vectors")
        spec = spec_from_pilot(load_data(path), m=args.m, law=args.law, seed=args.seed, name=args.name,
                               kernel=args.kernel)
        what = "pilot data have"
    if args.dim is not None and spec.d != args.dim:
        raise DataError(f"{path}: {what} dimension {spec.d}, not --dim {args.dim}")
    return spec


def cmd_create(args: argparse.Namespace) -> int:
    validate_stream_name(args.name)
    check_create_args(args)
    buckets = buckets_from_args(args)
    if args.estimate_from:
        spec = pilot_spec(args)
    else:
        if args.sigma is not None and not args.sigma > 0:
            raise DataError(f"--sigma must be > 0, got {args.sigma}")
        m = default_m(args.dim) if args.m is None else args.m
        spec = SketchSpec.create(
            d=args.dim, m=m, law=args.law, sigma=args.sigma or 1.0, seed=args.seed, name=args.name
        )
    store = open_store(Connections.from_args(args))
    store.create_stream(spec, buckets=buckets, replace=args.replace)
    print(f"created stream {args.name}: {spec.describe()}")
    one = spec_memory(spec, buckets, 1, args.name)
    print(memory_line(one, one.total - spec_memory(spec, buckets, 0, args.name).total))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from ingest.worker import IngestWorker

    stop_timeout = resolve_stop_timeout(args.stop_timeout)  # a bad value fails before connecting
    auth = resolve_http_auth(args)
    conn = Connections.from_args(args)
    store = open_store(conn)
    config = IngestConfig(
        stream=args.name, topic=args.topic, kafka=conn.kafka, group=args.group, dlq_topic=args.dlq,
        flush_ms=args.flush_ms, flush_records=args.flush_records, metrics_port=args.metrics_port,
        max_value_bytes=args.max_record_bytes, kafka_security=conn.kafka_security,
        stall_timeout_s=args.stall_timeout, stop_timeout_s=stop_timeout,
        http_auth=auth,
    )
    worker = IngestWorker(config, store)
    worker.install_signal_handlers()
    worker.run()
    return 0


def observed_ranges(spec: SketchSpec, bounds: Bounds | None) -> dict[str, list[float]] | None:
    """Each numeric field's (a numeric spec: each coordinate's ``x0 …``) ``[min, max]`` over the rows folded so far,
    in the data's units; None while not known (docs/design.md §1, "Typed records, streaming")."""
    if bounds is None:
        return None
    if spec.encoder is None:
        return {f"x{j}": [lo, hi] for j, (lo, hi) in enumerate(zip(bounds.lo.tolist(), bounds.hi.tolist(),
                                                                   strict=True))}
    return {k: [lo, hi] for k, (lo, hi) in spec.encoder.clipped_to(bounds).stats.ranges.items()}


def status_dict(store: SketchStore, name: str) -> dict[str, object]:
    """Everything ``status`` shows, as JSON-ready data."""
    state = store.state(name)
    spec = state.spec
    now_bytes = store.memory_bytes(name)
    buckets: dict[str, object] = {}
    cfg = store.bucket_config(name)
    for level in cfg.names:
        span = store.bucket_span(name, level)
        buckets[level] = None if span is None else {"first": span[0], "last": span[1], "buckets": span[2]}
    return {
        "stream": name,
        "spec": {
            "d": spec.d, "m": spec.m, "law": spec.law, "sigma": spec.sigma.tolist(),
            "scale_method": spec.scale_method, "fingerprint": spec.fingerprint,
            "scales": None if spec.scales is None else spec.scales.tolist(),
            "fields": None if spec.schema is None else list(spec.schema.names),
            "unknown": None if spec.encoding is None else spec.encoding.unknown,
        },
        "count": state.sketch.count,
        "ranges": observed_ranges(spec, state.sketch.bounds),
        "updated": state.updated,
        "partitions": [
            {"topic": p.topic, "partition": p.partition, "count": p.count, "next_offset": p.next_offset,
             "epoch": p.epoch, "updated": p.updated}
            for p in state.partitions
        ],
        "buckets": buckets,
        "bucket_config": cfg.__dict__,
        "memory_bytes": now_bytes,
        "memory": {"now_bytes": now_bytes, **spec_memory(spec, cfg, len(state.partitions), name).as_dict()},
    }


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))} ({time.time() - ts:.0f}s ago)"


def _ranges_text(ranges: dict[str, list[float]] | None, shown: int = 6) -> str:
    """``price [326, 1.882e+04], depth [43, 79] … (10 fields)``, or why there are none."""
    if ranges is None:
        return "not known (no rows yet, or rows folded without bounds)"
    parts = [f"{k} [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in list(ranges.items())[:shown]]
    more = f" … ({len(ranges)} fields)" if len(ranges) > shown else ""
    return (", ".join(parts) + more) if parts else "no numeric fields"


def _full_retention_text(memory: dict[str, object]) -> str:
    """``40.9 MB (40 912 345 bytes) at full retention (fine 361 buckets 17.8 MB, …)``."""
    total = int(memory["full_retention_bytes"])  # type: ignore[call-overload]
    levels = ", ".join(f"{lv['level']} {lv['buckets']} buckets {human_bytes(lv['bytes'])}"
                       for lv in memory["levels"])  # type: ignore[attr-defined]
    return f"{human_bytes(total)} ({total} bytes) at full retention ({levels})"


def cmd_status(args: argparse.Namespace) -> int:
    store = open_store(Connections.from_args(args))
    info = status_dict(store, args.name)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    spec = store.get_spec(args.name)
    lines = [
        f"stream     {args.name}",
        f"spec       {spec.describe()}",
        f"records    {info['count']:,}",
        f"updated    {_ago(info['updated'])}",  # type: ignore[arg-type]
        f"memory     {human_bytes(info['memory_bytes'])} ({info['memory_bytes']} bytes) in Redis now, "  # type: ignore[arg-type]
        f"{_full_retention_text(info['memory'])}",  # type: ignore[arg-type]
        f"ranges     {_ranges_text(info['ranges'])}",  # type: ignore[arg-type]
    ]
    for level, span in info["buckets"].items():  # type: ignore[union-attr]
        text = "empty" if span is None else (
            f"{span['buckets']} buckets from {_ago(span['first'])} to {_ago(span['last'])}"
        )
        lines.append(f"{level:<10} {text}")
    lines.append("partitions")
    for p in info["partitions"]:  # type: ignore[union-attr]
        lines.append(
            f"  {p['topic']}:{p['partition']:<4} count {p['count']:>12,}  next offset {p['next_offset']}  "
            f"epoch {p['epoch']}  updated {_ago(p['updated'])}"
        )
    print("\n".join(lines))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    store = open_store(Connections.from_args(args))
    spec = store.get_spec(args.name)
    if args.window is not None:
        sketch = store.read_window(args.name, args.window)
    elif args.halflife is not None:
        sketch = store.read_decayed(args.name, args.halflife)
    else:
        sketch = store.read_total(args.name)
    if sketch.count == 0:
        raise SketchgenError(f"stream {args.name!r} holds no records{' in that window' if args.window else ''}")
    save_sketch(args.out, spec, sketch)
    log.info("exported %s records of stream %s to %s", sketch.count, args.name, args.out)
    return 0
