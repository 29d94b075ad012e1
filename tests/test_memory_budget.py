"""A stream's memory at full retention on a real Redis: the model against MEMORY USAGE, three levels against two.

At m = 3000 (d = 2) one stream with the default levels and one with the two levels of older releases
(``--coarse-keep 604800 --long-bucket 0``) are created through the CLI and every level is filled to
full retention (bench/stream_memory.py: one flush per bucket). Their own redis-server (appendonly off)
holds the ~160 MB.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import time

import pytest

from bench.stream_memory import bucket_counts, fill_to_full_retention, measure_keys
from sketch_store.buckets import DEFAULT_BUCKETS
from sketch_store.memory_budget import human_bytes, size_class, stream_memory
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketchgen.cli import main
from sketchgen.local_stack import RedisServer

pytestmark = pytest.mark.slow
M = 3000


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """``{layout: (status --json, measured MEMORY USAGE by part, buckets per level, create's stdout)}``."""
    layouts = {"new": [], "old": ["--coarse-keep", "604800", "--long-bucket", "0"]}
    now = time.time() + 3600  # buckets stamped relative to an hour ahead: none expires during the test
    with RedisServer(tmp_path_factory.mktemp("redis-memory"), appendonly=False) as server:
        store = SketchStore(connect(server.url))
        out = {}
        for name, flags in layouts.items():
            created = run_cli(["create", name, "--dim", "2", "--m", str(M), "--redis", server.url, *flags])
            fill_to_full_retention(store, name, partitions=1, now=now)
            status = json.loads(run_cli(["status", name, "--json", "--redis", server.url]))
            out[name] = (status, measure_keys(store, name), bucket_counts(store, name), created)
        store.client.close()
        yield out


def run_cli(argv: list[str]) -> str:
    """``sketchgen ARGV`` in this process; its stdout (it must exit 0)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return buf.getvalue()


def test_status_full_retention_is_within_ten_percent_of_measured_memory(filled):
    for name, (status, measured, counts, _) in filled.items():
        memory = status["memory"]
        total = sum(measured.values())
        assert memory["now_bytes"] == status["memory_bytes"] == total, name
        assert abs(memory["full_retention_bytes"] - total) <= 0.10 * total, (name, memory, measured)
        for level in memory["levels"]:
            assert level["buckets"] == counts[level["level"]], (name, level, counts)
            assert abs(level["bytes"] - measured[level["level"]]) <= 0.10 * measured[level["level"]], (name, level)


def test_three_levels_hold_at_most_half_the_memory_of_the_old_two(filled):
    new, old = (sum(filled[name][1].values()) for name in ("new", "old"))
    assert [lv["level"] for lv in filled["new"][0]["memory"]["levels"]] == ["fine", "coarse", "long"]
    assert [lv["level"] for lv in filled["old"][0]["memory"]["levels"]] == ["fine", "coarse"]
    assert new <= 0.5 * old, (new, old, new / old)
    assert filled["new"][0]["memory"]["levels"][-1]["keep_seconds"] == filled["old"][0]["memory"]["levels"][-1][
        "keep_seconds"] == 7 * 86400  # equal retention: windows still reach back 7 days


def test_create_prints_the_full_retention_memory_in_one_line(filled):
    status, _, _, created = filled["new"]
    (line,) = [x for x in created.splitlines() if x.startswith("memory at full retention")]
    total = int(re.search(r"\((\d+) bytes\)", line).group(1))
    assert total == status["memory"]["full_retention_bytes"]  # the same model, one partition
    assert human_bytes(total) in line and "819 buckets (fine 361, coarse 289, long 169)" in line


def test_size_classes_and_the_model_follow_the_allocator():
    assert [size_class(n) for n in (1, 8, 9, 128, 129, 164, 48006, 24006)] == [8, 8, 16, 128, 160, 192, 49152, 24576]
    one = stream_memory(M, 2, 50_000, DEFAULT_BUCKETS, partitions=1)
    two = stream_memory(M, 2, 50_000, DEFAULT_BUCKETS, partitions=2)
    assert two.total - one.total == two.partitions_bytes - one.partitions_bytes > 16 * M
