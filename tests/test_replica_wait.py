"""Claims (and, when asked, flushes) wait for the primary's replicas: a real primary and a real replica.

A replica stopped with SIGSTOP stays connected in the primary's eyes, so a write that waits for it
blocks until the replica is resumed (or the wait times out); one that does not wait returns at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import numpy as np
import pytest
import redis

from sketch_store.errors import SketchgenError
from sketch_store.leadership import Lease
from sketch_store.redis_connect import connect
from sketch_store.redis_keys import StreamKeys
from sketch_store.redis_store import SketchStore
from sketch_store.replication import ReplicaWaiter, check_durability, connected_replicas
from sketchgen.local_stack import RedisServer
from tests.redis_topology import role_lists, wait_until
from tests.store_helpers import make_spec


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A primary and one replica replicating from it (``master_link_status:up``)."""
    with RedisServer(tmp_path_factory.mktemp("primary"), appendonly=False) as primary:
        with RedisServer(
            tmp_path_factory.mktemp("replica"), appendonly=False,
            extra_args=("--replicaof", primary.host, str(primary.port)),
        ) as replica:
            wait_synced(primary, replica)
            yield primary, replica


def wait_synced(primary: RedisServer, replica: RedisServer) -> None:
    """Wait until ``replica`` replicates ``primary`` (link up) and the primary lists it in ``ROLE``.

    The replica reports its link up before the primary has put it online, and a write only waits
    for replicas the primary lists.
    """
    client = redis.Redis(host=replica.host, port=replica.port)
    try:
        wait_until(f"{replica!r} to replicate {primary!r}",
                   lambda: client.info("replication").get("master_link_status") == "up"
                   and role_lists(primary, [replica]), 20.0, [primary, replica])
    finally:
        client.close()


def _stopped(server: RedisServer) -> None:
    os.kill(server.pid, signal.SIGSTOP)


def _resumed(server: RedisServer) -> None:
    os.kill(server.pid, signal.SIGCONT)


def _claim_in_thread(store: SketchStore, name: str) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        out["claim"] = store.claim(name, "t", 0)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_claim_returns_only_once_the_replica_has_its_epoch(pair):
    primary, replica = pair
    store = SketchStore(connect(primary.url))
    store.client.flushall()
    store.create_stream(make_spec("waits", m=8))
    _stopped(replica)
    try:
        thread, out = _claim_in_thread(store, "waits")
        thread.join(0.8)
        assert thread.is_alive(), "the claim returned while its only replica could not have it"
    finally:
        _resumed(replica)
    thread.join(10)
    assert not thread.is_alive()
    epoch = out["claim"].epoch
    on_replica = redis.Redis(host=replica.host, port=replica.port)
    assert int(on_replica.get(StreamKeys("waits").epoch_counter)) == epoch  # read at once: no sleep
    assert int(on_replica.hget(StreamKeys("waits").partition("t", 0), "epoch")) == epoch


def test_without_durability_a_claim_does_not_wait(pair):
    primary, replica = pair
    store = SketchStore(connect(primary.url), durability="none")
    store.client.flushall()
    store.create_stream(make_spec("nowait", m=8))
    _stopped(replica)
    try:
        thread, _ = _claim_in_thread(store, "nowait")
        thread.join(5)
        assert not thread.is_alive()
    finally:
        _resumed(replica)


def test_a_replica_that_does_not_answer_delays_a_claim_by_the_timeout_only_and_is_logged(pair, caplog):
    primary, replica = pair
    store = SketchStore(connect(primary.url))
    store._waiter.timeout_ms = 300
    store.client.flushall()
    store.create_stream(make_spec("late", m=8))
    _stopped(replica)
    try:
        with caplog.at_level(logging.WARNING, logger="sketch_store.redis_store"):
            start = time.monotonic()
            claim = store.claim("late", "t", 0)
            waited = time.monotonic() - start
    finally:
        _resumed(replica)
    assert claim.epoch >= 1 and 0.25 <= waited < 5
    assert any("acknowledged by 0 of 1 replicas" in r.getMessage() for r in caplog.records)


def test_replicated_durability_waits_for_every_flush(pair):
    primary, replica = pair
    store = SketchStore(connect(primary.url), durability="replicated")
    store.client.flushall()
    spec = make_spec("flushes", m=8)
    store.create_stream(spec)
    claim = store.claim("flushes", "t", 0)
    total = np.arange(16, dtype=float)
    _stopped(replica)
    try:
        out: dict = {}
        thread = threading.Thread(
            target=lambda: out.setdefault("status", store.flush("flushes", claim, 0, 5, total, 5)), daemon=True
        )
        thread.start()
        thread.join(0.8)
        assert thread.is_alive(), "a replicated flush returned before its replica had it"
    finally:
        _resumed(replica)
    thread.join(10)
    assert out["status"] == "ok"
    on_replica = redis.Redis(host=replica.host, port=replica.port)
    assert int(on_replica.hget(StreamKeys("flushes").partition("t", 0), "next_offset")) == 5


def test_role_replies_and_modes():
    assert connected_replicas([b"master", 0, []]) == 0
    assert connected_replicas([b"master", 10, [[b"h", b"1", b"10"], [b"h", b"2", b"10"]]]) == 2
    assert check_durability("replicated") == "replicated"
    with pytest.raises(SketchgenError, match=r"must be one of none, claims, replicated \(--redis-durability"):
        check_durability("always")
    with pytest.raises(SketchgenError, match="timeout must be > 0"):
        ReplicaWaiter(redis.Redis(), timeout_s=0)


def test_a_lease_is_taken_only_once_the_replica_has_it_and_is_held_for_one_ttl(pair):
    primary, replica = pair
    client = connect(primary.url)
    lease = Lease(client, "leased", holder="a", ttl=1.5)
    _stopped(replica)
    try:
        out: dict = {}
        thread = threading.Thread(target=lambda: out.setdefault("took", lease.acquire()), daemon=True)
        thread.start()
        thread.join(0.3)
        assert thread.is_alive(), "the lease was taken before its only replica had it"
    finally:
        _resumed(replica)
    thread.join(10)
    assert out["took"] and lease.held
    on_replica = redis.Redis(host=replica.host, port=replica.port)
    assert on_replica.get(lease.key) == b"a"
    assert not Lease(client, "leased", holder="b", ttl=1.5).acquire()
    time.sleep(1.6)  # no renewal for one TTL: we no longer count as holding it, and Redis let it go
    assert not lease.held
    other = Lease(client, "leased", holder="b", ttl=1.5)
    assert other.acquire() and other.held
    assert not lease.renew() and not lease.held


def test_the_cli_refuses_an_unknown_durability_in_one_line():
    import subprocess
    import sys

    for extra, env in ((["--redis-durability", "always"], {}), ([], {"SKETCHGEN_REDIS_DURABILITY": "x"})):
        done = subprocess.run(
            [sys.executable, "-m", "sketchgen", "status", "s", *extra], capture_output=True, text=True,
            env={**os.environ, **env}, timeout=60,
        )
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0 and "durability must be one of none, claims" in done.stderr


@pytest.mark.parametrize("refused", ["ROLE", "WAIT"])
def test_a_server_that_refuses_role_or_wait_still_takes_claims_and_flushes(tmp_path, refused, caplog):
    """A proxy or managed Redis may refuse ROLE or WAIT: writes go on, unwaited, with one warning."""
    with RedisServer(tmp_path / "primary", appendonly=False, extra_args=("--rename-command", refused, "")) as primary:
        with RedisServer(tmp_path / "replica", appendonly=False,
                         extra_args=("--replicaof", primary.host, str(primary.port))) as replica:
            wait_synced(primary, replica)
            store = SketchStore(connect(primary.url), durability="replicated")
            store.create_stream(make_spec("refuses", m=8))
            with caplog.at_level(logging.WARNING, logger="sketch_store.replication"):
                claim = store.claim("refuses", "t", 0)
                assert store.flush("refuses", claim, 0, 3, np.ones(16), 3) == "ok"
                assert store.flush("refuses", claim, 3, 5, np.ones(16), 2) == "ok"
            assert store.total_count("refuses") == 5
            warnings = [r.getMessage() for r in caplog.records if f"Redis refused {refused}" in r.getMessage()]
            assert len(warnings) == 1, warnings
            store.client.close()
