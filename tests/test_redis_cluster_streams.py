"""Streams on a real Redis Cluster (3 primaries + 3 replicas) and through Sentinel, by URL.

The same store API and ``sketchgen`` commands as on one server, with ``redis+cluster://`` and
``redis+sentinel://`` URLs; the deployments are real servers on loopback (tests/redis_topology.py),
and the failovers are the servers' own after a SIGKILL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ingest.health import quick_client
from ingest.membership import Membership
from sketch_store.errors import SketchgenError
from sketch_store.leadership import CheckpointStore, Lease
from sketch_store.redis_connect import check_reachable, connect
from sketch_store.redis_keys import StreamKeys
from sketch_store.redis_store import BucketDelta, SketchStore, StreamNotFoundError
from sketchgen.streaming import status_dict
from tests import redis_topology
from tests.redis_topology import RedisClusterTopology, RedisSentinelTopology
from tests.store_helpers import delta, make_spec

redis_cluster = redis_topology.redis_cluster
redis_sentinel = redis_topology.redis_sentinel

TIMEOUT = 120  # per subprocess


def sketchgen(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m sketchgen ARGS`` with no inherited SKETCHGEN_* variables; fails the test on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKETCHGEN_")}
    done = subprocess.run([sys.executable, "-m", "sketchgen", *args], capture_output=True, text=True, env=env,
                          timeout=TIMEOUT, check=False)
    assert done.returncode == 0, f"sketchgen {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}"
    return done


def flush_rows(store: SketchStore, name: str, n: int, seed: int, partition: int = 0,
               from_offset: int = 0, now: float | None = None) -> np.ndarray:
    """Claim partition ``partition`` of topic ``t`` and flush ``n`` seeded rows with their fine/coarse buckets."""
    spec = store.get_spec(name)
    now = time.time() if now is None else now
    d = delta(spec, n, seed)
    buckets = [BucketDelta("fine", int(now // 10 * 10), d.total, d.count),
               BucketDelta("coarse", int(now // 300 * 300), d.total, d.count)]
    claim = store.claim(name, "t", partition)
    assert store.flush(name, claim, from_offset, from_offset + n, d.total, d.count, buckets, now=now) == "ok"
    return d.total


def test_check_reachable_on_cluster_and_sentinel_urls(redis_cluster: RedisClusterTopology,
                                                      redis_sentinel: RedisSentinelTopology) -> None:
    check_reachable(redis_cluster.url)
    check_reachable(redis_sentinel.url)
    for url in (redis_cluster.url, redis_sentinel.url):
        wrong_user = url.replace("://", "://nobody:hunter2@", 1)  # no such ACL user
        with pytest.raises(SketchgenError, match=r"^Redis at .* refused the credentials") as caught:
            check_reachable(wrong_user)
        assert "hunter2" not in str(caught.value) and "nobody:***@" in str(caught.value)
    with pytest.raises(SketchgenError, match=r"^cannot reach Redis at redis\+sentinel://127\.0\.0\.1:1/"):
        check_reachable("redis+sentinel://127.0.0.1:1/sgprimary/0")
    with pytest.raises(SketchgenError, match=r"^cannot reach Redis at redis\+cluster://127\.0\.0\.1:1"):
        check_reachable("redis+cluster://127.0.0.1:1")


def test_the_readiness_probes_quick_client_reaches_the_same_deployment(
    redis_cluster: RedisClusterTopology, redis_sentinel: RedisSentinelTopology
) -> None:
    for url in (redis_cluster.url, redis_sentinel.url):
        client = connect(url)
        client.set("{sg:probe}:x", b"1")
        quick = quick_client(client, timeout=1.0)
        assert type(quick) is type(client) and quick.get("{sg:probe}:x") == b"1"
        quick.close()
        client.close()


def test_cli_and_store_round_trip_on_the_cluster(redis_cluster: RedisClusterTopology) -> None:
    url = redis_cluster.url
    sketchgen("create", "roundtrip", "--dim", "2", "--m", "16", "--sigma", "1.0", "--redis", url)
    store = SketchStore(connect(url))
    total = flush_rows(store, "roundtrip", 40, seed=1)
    assert store.read_total("roundtrip").count == 40
    np.testing.assert_allclose(store.read_total("roundtrip").total, total, rtol=1e-12)
    assert store.read_window("roundtrip", 60).count == 40
    assert store.claims_held("roundtrip", [store.claim("roundtrip", "t", 1)]) == [True]
    status = json.loads(sketchgen("status", "roundtrip", "--redis", url, "--json").stdout)
    assert status["count"] == 40 and status["memory_bytes"] > 0
    assert store.delete_stream("roundtrip") >= 4  # meta, parts, two partitions, buckets and indexes
    with pytest.raises(StreamNotFoundError):
        store.read_total("roundtrip")
    store.client.close()


def test_learner_lease_checkpoint_and_ingest_membership_on_the_cluster(redis_cluster: RedisClusterTopology) -> None:
    store = SketchStore(connect(redis_cluster.url))
    store.create_stream(make_spec("learned"))
    lease, rival = Lease(store.client, "learned", "a"), Lease(store.client, "learned", "b")
    assert lease.acquire() and not rival.acquire() and lease.current_holder() == "a"
    checkpoints = CheckpointStore(store.client, "learned")
    checkpoints.save(lease, b"model", make_spec("learned").fingerprint, 3, 10.0,
                     incarnation=store.incarnation("learned"))
    loaded = checkpoints.load()
    assert loaded is not None and (loaded.model, loaded.steps, loaded.holder) == (b"model", 3, "a")
    assert lease.release() and rival.acquire()
    one, two = (Membership(store.client, "learned", "g", member) for member in ("w1", "w2"))
    one.heartbeat()
    assert two.heartbeat().members == ["w1", "w2"]
    store.client.close()


def test_hundred_streams_written_concurrently_spread_over_all_shards(redis_cluster: RedisClusterTopology) -> None:
    store = SketchStore(connect(redis_cluster.url))
    names = [f"many-{i:03d}" for i in range(100)]

    def create_and_write(i: int) -> None:
        store.create_stream(make_spec(names[i]))
        flush_rows(store, names[i], 10 + i, seed=i)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create_and_write, range(100)))
    shards = {redis_cluster.shard_of_key(StreamKeys(name).meta) for name in names}
    assert len(shards) == 3
    for i, name in enumerate(names):
        status = status_dict(store, name)
        assert status["count"] == 10 + i and status["memory_bytes"] > 0
    with ThreadPoolExecutor(5) as pool:
        outputs = list(pool.map(lambda n: sketchgen("status", n, "--redis", redis_cluster.url, "--json"),
                                names[:5]))
    assert [json.loads(out.stdout)["count"] for out in outputs] == [10, 11, 12, 13, 14]
    store.client.close()


def test_cluster_client_rides_out_a_failover_of_the_streams_slot(redis_cluster: RedisClusterTopology) -> None:
    store = SketchStore(connect(redis_cluster.url))
    store.create_stream(make_spec("failover"))
    flush_rows(store, "failover", 30, seed=3)
    redis_cluster.wait_replicas_in_sync()
    old = redis_cluster.primary_for_key(StreamKeys("failover").meta)
    new = redis_cluster.fail_over_key(StreamKeys("failover").meta)
    assert new is not old
    assert store.read_total("failover").count == 30  # replicated before the failover: still there
    flush_rows(store, "failover", 20, seed=4, partition=1)
    assert store.read_total("failover").count == 50
    store.client.close()


def test_sentinel_round_trip_then_the_same_client_follows_a_failover(redis_sentinel: RedisSentinelTopology) -> None:
    url = redis_sentinel.url
    sketchgen("create", "sentinel", "--dim", "2", "--m", "16", "--sigma", "1.0", "--redis", url)
    store = SketchStore(connect(url))
    flush_rows(store, "sentinel", 25, seed=5)
    assert store.read_total("sentinel").count == 25 and store.read_window("sentinel", 60).count == 25
    assert json.loads(sketchgen("status", "sentinel", "--redis", url, "--json").stdout)["count"] == 25
    redis_sentinel.wait_replicas_in_sync()
    old = redis_sentinel.primary()
    new = redis_sentinel.fail_over()
    assert new is not old
    assert store.read_total("sentinel").count == 25  # replicated before the failover: still there
    flush_rows(store, "sentinel", 15, seed=6, partition=1)
    assert store.read_total("sentinel").count == 40
    assert store.delete_stream("sentinel") >= 4
    store.client.close()


def test_sentinel_client_follows_a_graceful_switch_over(redis_sentinel: RedisSentinelTopology) -> None:
    """The demoted primary keeps running (as a replica) at its address: the client must not stay on it."""
    store = SketchStore(connect(redis_sentinel.url))
    store.create_stream(make_spec("switch"))
    flush_rows(store, "switch", 10, seed=7)
    redis_sentinel.wait_replicas_in_sync()
    old = redis_sentinel.primary()
    new = redis_sentinel.switch_over()
    assert new is not old and old.running
    flush_rows(store, "switch", 5, seed=8, partition=1)
    assert store.read_total("switch").count == 15
    store.client.close()
