"""A stream's Redis memory at full retention: measured against the memory model, new levels against old.

Starts its own redis-server (appendonly off), creates one stream with the default three bucket levels
(fine 10 s/1 h, coarse 5 min/1 day, long 1 h/7 days) and one with the two levels of older releases
(fine 10 s/1 h, coarse 5 min/7 days), fills every level of each to full retention (one flush per
bucket, stamped across the level's retention relative to a ``now`` an hour ahead of the clock, so no
bucket expires while it runs) and prints, per level, the predicted bytes
(:func:`sketch_store.memory_budget.stream_memory`) beside the measured ``MEMORY USAGE`` sum, and the
server's ``used_memory`` growth (which also counts the expire entries ``MEMORY USAGE`` leaves out).

Run: ``.venv/bin/python bench/stream_memory.py [--m 3000] [--d 2] [--partitions 1]`` (docs/results.md,
"Stream memory at full retention").
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sketch_store.buckets import DEFAULT_BUCKETS, BucketConfig  # noqa: E402
from sketch_store.memory_budget import StreamMemory, human_bytes, stream_memory  # noqa: E402
from sketch_store.redis_keys import StreamKeys  # noqa: E402
from sketch_store.redis_store import BucketDelta, SketchStore  # noqa: E402
from sketch_store.spec import SketchSpec  # noqa: E402

#: The layout of streams created before the long level existed.
OLD_BUCKETS = BucketConfig()
TOPIC = "events"


def level_starts(seconds: int, keep: int, now: float) -> list[int]:
    """Every bucket start of a level that is live at ``now``: ``start + seconds + keep > now``, ``start <= now``."""
    newest = math.floor(now / seconds) * seconds
    return [s for s in range(newest, newest - keep - seconds, -seconds) if s + seconds + keep > now]


def fill_to_full_retention(store: SketchStore, name: str, partitions: int, now: float) -> int:
    """Flush one row into every live bucket of every level of stream ``name`` (one flush per bucket), spread over
    ``partitions`` partitions; returns the number of flushes."""
    spec = store.get_spec(name)
    claims = [store.claim(name, TOPIC, p) for p in range(partitions)]
    offsets = [0] * partitions
    vec = np.random.default_rng(0).uniform(-1, 1, 2 * spec.m)
    n = 0
    for level in store.bucket_config(name).levels:
        for start in level_starts(level.seconds, level.keep, now):
            p = n % partitions
            bucket = [BucketDelta(level.name, start, vec, 1)]
            store.flush(name, claims[p], offsets[p], offsets[p] + 1, vec, 1, bucket, now=now)
            offsets[p] += 1
            n += 1
    return n


def measure_keys(store: SketchStore, name: str) -> dict[str, int]:
    """``MEMORY USAGE`` of the stream's keys summed by part: each level (its buckets and index), ``partitions``
    and ``meta`` (meta, parts set, epoch counter and anything else)."""
    keys = StreamKeys(name)
    out: dict[str, int] = defaultdict(int)
    for raw in store.client.scan_iter(match=keys.pattern, count=1000):
        key = raw.decode()[len(keys.prefix) + 1:]
        kind, _, rest = key.partition(":")
        part = rest.split(":")[0] if kind in ("bucket", "buckets") else "partitions" if kind == "part" else "meta"
        out[part] += int(store.client.memory_usage(raw, samples=0) or 0)
    return dict(out)


def bucket_counts(store: SketchStore, name: str) -> dict[str, int]:
    """Live buckets per level (the index's size)."""
    return {lv: int(store.client.zcard(StreamKeys(name).bucket_index(lv))) for lv in store.bucket_config(name).names}


def predicted(store: SketchStore, name: str, partitions: int) -> StreamMemory:
    spec = store.get_spec(name)
    return stream_memory(spec.m, spec.d, len(spec.to_bytes()), store.bucket_config(name), partitions, name=name,
                         topic=TOPIC)


def run_layout(store: SketchStore, name: str, spec: SketchSpec, buckets: BucketConfig, partitions: int,
               now: float) -> dict[str, object]:
    """Create and fill one stream; its measured and predicted figures."""
    store.create_stream(spec.with_name(name), buckets=buckets, replace=True)
    used_before = int(store.client.info("memory")["used_memory"])
    t0 = time.perf_counter()
    flushes = fill_to_full_retention(store, name, partitions, now)
    seconds = time.perf_counter() - t0
    used = int(store.client.info("memory")["used_memory"]) - used_before
    return {"name": name, "flushes": flushes, "fill_seconds": seconds, "measured": measure_keys(store, name),
            "buckets": bucket_counts(store, name), "predicted": predicted(store, name, partitions),
            "used_memory_growth": used}


def report(result: dict[str, object]) -> list[str]:
    pred: StreamMemory = result["predicted"]  # type: ignore[assignment]
    measured: dict[str, int] = result["measured"]  # type: ignore[assignment]
    counts: dict[str, int] = result["buckets"]  # type: ignore[assignment]
    rows = [f"| {lv.level} {lv.resolution_seconds} s / {lv.keep_seconds} s | {counts[lv.level]} ({lv.buckets}) | "
            f"{measured.get(lv.level, 0):,} | {lv.bytes:,} |" for lv in pred.levels]
    rows.append(f"| partitions | | {measured.get('partitions', 0):,} | {pred.partitions_bytes:,} |")
    rows.append(f"| meta, parts, epoch | | {measured.get('meta', 0):,} | {pred.meta_bytes:,} |")
    total = sum(measured.values())
    rows.append(f"| **total** | {sum(counts.values())} | **{total:,}** ({human_bytes(total)}) | "
                f"**{pred.total:,}** ({pred.total / total - 1:+.2%}) |")
    return [f"{result['name']}: {result['flushes']} flushes in {result['fill_seconds']:.1f} s; used_memory grew "
            f"{result['used_memory_growth']:,} bytes",
            "| level | buckets measured (predicted) | MEMORY USAGE, bytes | predicted, bytes |", "|---|---|---|---|",
            *rows]


def main() -> None:
    from sketch_store.redis_connect import connect
    from sketchgen.local_stack import RedisServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=3000)
    parser.add_argument("--d", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=1)
    args = parser.parse_args()
    spec = SketchSpec.create(d=args.d, m=args.m, seed=0)
    now = time.time() + 3600
    with RedisServer(tempfile.mkdtemp(prefix="stream-memory-"), appendonly=False) as server:
        store = SketchStore(connect(server.url))
        print(f"redis {store.client.info('server')['redis_version']}, m = {args.m}, d = {args.d}, "
              f"{args.partitions} partition(s), spec {len(spec.to_bytes()):,} bytes")
        results = [run_layout(store, "new", spec, DEFAULT_BUCKETS, args.partitions, now),
                   run_layout(store, "old", spec, OLD_BUCKETS, args.partitions, now)]
        for result in results:
            print("\n".join(report(result)) + "\n")
        new, old = (sum(r["measured"].values()) for r in results)  # type: ignore[attr-defined]
        print(f"new / old, measured: {new / old:.3f}")


if __name__ == "__main__":
    main()
