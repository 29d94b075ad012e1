"""Real Redis Cluster and Sentinel deployments on loopback, for tests: start, fail over, stop.

Every server is a :class:`sketchgen.local_stack.RedisServer` (own data directory and log under
``tmp_dir``, free port, AOF with ``appendfsync always``), so a node killed with SIGKILL and
started again on the same directory keeps what it acknowledged and rejoins. Nothing here mocks
Redis: the failovers are the servers' own (cluster replica election, Sentinel promotion).

Test modules take the fixtures in by name::

    from tests import redis_topology

    redis_cluster = redis_topology.redis_cluster

Both skip (with the reason) only when no redis-server / redis-cli binary is installed.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
import redis

from sketchgen.local_stack import LOOPBACK, LocalStackError, RedisServer, find_redis_server, free_port, port_in_use

__all__ = [
    "RedisClusterTopology",
    "RedisSentinelTopology",
    "SentinelServer",
    "TopologyError",
    "find_redis_cli",
    "node_command",
    "redis_cluster",
    "redis_sentinel",
    "role_lists",
    "wait_until",
]

log = logging.getLogger(__name__)

#: Slots of a Redis Cluster.
SLOTS = 16384


#: A cluster node's bus listens on its port + 10000, so its port must be at most this.
MAX_CLUSTER_PORT = 55535


class TopologyError(LocalStackError):
    """A cluster or sentinel deployment did not reach the expected state in time."""


def free_cluster_port(taken: set[int]) -> int:
    """A free loopback port ≤ 55535 whose cluster bus port (+10000) is free too, not in ``taken``."""
    for _ in range(1000):
        port = free_port()
        if port <= MAX_CLUSTER_PORT and port not in taken and not port_in_use(port + 10000):
            return port
    raise TopologyError("found no free port pair (port, port + 10000) for a cluster node")


def find_redis_cli() -> str:
    """``redis-cli`` beside the server binary, else on PATH.

    :raises LocalStackError: if there is none.
    """
    beside = Path(find_redis_server()).with_name("redis-cli")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    on_path = shutil.which("redis-cli")
    if on_path:
        return on_path
    raise LocalStackError("no redis-cli found (apt-get install redis-tools)")


def node_command(server: RedisServer, *args: str, timeout: float = 2.0) -> object:
    """One command sent to ``server`` on a fresh connection; the raw RESP reply (no redis-py parsing).

    Raw so that CLUSTER NODES / SLOTS / INFO read the same with every redis-py version.
    """
    conn = redis.Connection(
        host=server.host, port=server.port, socket_timeout=timeout, socket_connect_timeout=timeout,
        decode_responses=True,
    )  # fmt: skip
    try:
        conn.send_command(*args)
        return conn.read_response()
    finally:
        conn.disconnect()


def info_fields(server: RedisServer, section: str) -> dict[str, str]:
    """``INFO section`` (or ``CLUSTER INFO`` for ``section="cluster-info"``) as a field → value dict."""
    command = ("CLUSTER", "INFO") if section == "cluster-info" else ("INFO", section)
    text = node_command(server, *command)
    fields: dict[str, str] = {}
    for line in str(text).splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            fields[key.strip()] = value.strip()
    return fields


def wait_until(what: str, check: Callable[[], bool], timeout: float, servers: list[RedisServer]) -> None:
    """Poll ``check`` (connection errors count as "not yet") until true; else a TopologyError with log tails."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last_error = f" (last error: {exc})"
        time.sleep(0.1)
    tails = "".join(
        f"\n  --- {server!r} log tail:\n    " + server.log_tail(8).replace("\n", "\n    ") for server in servers
    )
    raise TopologyError(f"timed out after {timeout:g} s waiting for {what}{last_error}{tails}")


def role_lists(primary: RedisServer, replicas: list[RedisServer]) -> bool:
    """Whether ``primary`` has put every one of ``replicas`` online (what its ``ROLE`` lists, and writes wait for).

    A primary puts a replica online only after the sync, on its next cron tick after a diskless one:
    the replica can report its link up first. Read from ``INFO replication`` (``slaveN:…,state=online``),
    which answers even where ``ROLE`` is renamed away.
    """
    online = set()
    for field, value in info_fields(primary, "replication").items():
        if field.startswith("slave") and field[5:].isdigit():
            entry = dict(part.split("=", 1) for part in value.split(",") if "=" in part)
            if entry.get("state") == "online":
                online.add(int(entry.get("port", "0")))
    return all(replica.port in online for replica in replicas)


def _replication_in_sync(primary: RedisServer, replicas: list[RedisServer]) -> bool:
    """Whether every replica has ``primary`` as master, its link up, has replayed the primary's offset,
    and is listed by the primary's ``ROLE``."""
    if not role_lists(primary, replicas):
        return False
    offset = int(info_fields(primary, "replication").get("master_repl_offset", "0"))
    for replica in replicas:
        fields = info_fields(replica, "replication")
        if fields.get("role") != "slave" or fields.get("master_port") != str(primary.port):
            return False
        if fields.get("master_link_status") != "up" or int(fields.get("slave_repl_offset", "-1")) < offset:
            return False
    return True


def _stop_all(servers: list[RedisServer]) -> None:
    """Stop every server that runs; one failing to stop does not keep the others running."""
    for server in servers:
        try:
            server.stop(timeout=5.0)
        except Exception:  # pragma: no cover - best effort: kill what did not stop
            log.warning("could not stop %r; killing it", server, exc_info=True)
            server.kill()


class _Topology:
    """Context-manager plumbing shared by both deployments: start, and stop all even on failure."""

    def start(self) -> Self:
        raise NotImplementedError

    def servers(self) -> list[RedisServer]:
        """Every server process of the deployment."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every server of the deployment."""
        _stop_all(self.servers())

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Redis Cluster
# ---------------------------------------------------------------------------------------------


class RedisClusterTopology(_Topology):
    """``primaries`` primaries with ``replicas_per_primary`` replicas each, made by ``redis-cli --cluster create``.

    ``--cluster-replica-validity-factor 0`` lets a replica be promoted however long its link was down,
    and the 1.5 s node timeout makes a failover take a few seconds.
    """

    def __init__(self, tmp_dir: str | os.PathLike[str], primaries: int = 3, replicas_per_primary: int = 1) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.primaries = primaries
        self.replicas_per_primary = replicas_per_primary
        count = primaries * (1 + replicas_per_primary)
        ports: set[int] = set()
        for _ in range(count):
            ports.add(free_cluster_port(ports))
        self.nodes = [
            RedisServer(self.tmp_dir / f"node{i}", port, appendfsync="always", extra_args=self._node_args())
            for i, port in enumerate(sorted(ports))
        ]
        self._seed_ports: list[int] = []

    @staticmethod
    def _node_args() -> tuple[str, ...]:
        return (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",  # relative to the node's own --dir
            "--cluster-node-timeout", "1500",
            "--cluster-replica-validity-factor", "0",
        )  # fmt: skip

    def servers(self) -> list[RedisServer]:
        """Every node."""
        return list(self.nodes)

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`` (the primaries at creation)."""
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{port}" for port in self._seed_ports)

    def start(self) -> Self:
        """Start the nodes, create the cluster, wait until every slot is served and replicas are in sync."""
        for node in self.nodes:
            node.start()
        self._create()
        self._seed_ports = [node.port for node in self.nodes[: self.primaries]]
        self.wait_healthy()
        self.wait_replicas_in_sync()
        return self

    def _create(self) -> None:
        """``redis-cli --cluster create … --cluster-yes``; its output in the error if it fails."""
        cmd = [
            find_redis_cli(), "--cluster", "create", *(f"{LOOPBACK}:{node.port}" for node in self.nodes),
            "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        (self.tmp_dir / "cluster-create.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise TopologyError(f"redis-cli --cluster create failed ({done.returncode}): {done.stdout[-800:]}")

    def running_nodes(self) -> list[RedisServer]:
        """The nodes whose process is alive."""
        return [node for node in self.nodes if node.running]

    def _node_by_port(self, port: int) -> RedisServer:
        for node in self.nodes:
            if node.port == port:
                return node
        raise TopologyError(f"no node of this cluster listens on port {port}")

    def node_id(self, node: RedisServer) -> str:
        """``CLUSTER MYID`` of ``node``."""
        return str(node_command(node, "CLUSTER", "MYID"))

    def keyslot(self, key: str) -> int:
        """``CLUSTER KEYSLOT key``, asked of any running node."""
        return int(node_command(self.running_nodes()[0], "CLUSTER", "KEYSLOT", key))  # type: ignore[arg-type]

    def _slot_owner_port(self, node: RedisServer, slot: int) -> int | None:
        """The port of the primary serving ``slot`` according to ``node``'s CLUSTER SLOTS."""
        for entry in node_command(node, "CLUSTER", "SLOTS"):  # type: ignore[union-attr]
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            if start <= slot <= end:
                return int(primary[1])
        return None

    def primary_for_key(self, key: str) -> RedisServer:
        """The node serving ``key``'s slot now (asked of a running node)."""
        slot = self.keyslot(key)
        port = self._slot_owner_port(self.running_nodes()[0], slot)
        if port is None:
            raise TopologyError(f"no node serves slot {slot} of key {key!r}")
        return self._node_by_port(port)

    def shard_of_key(self, key: str) -> str:
        """An id of the shard holding ``key``: the node id of its current primary."""
        return self.node_id(self.primary_for_key(key))

    def roles(self) -> dict[str, list[RedisServer]]:
        """Running nodes grouped by ``ROLE``: ``{"master": [...], "slave": [...]}``."""
        grouped: dict[str, list[RedisServer]] = {"master": [], "slave": []}
        for node in self.running_nodes():
            role = str(node_command(node, "ROLE")[0])  # type: ignore[index]
            grouped.setdefault(role, []).append(node)
        return grouped

    def _healthy(self) -> bool:
        """Every running node: cluster_state ok, all slots assigned and ok, every node known."""
        for node in self.running_nodes():
            fields = info_fields(node, "cluster-info")
            if fields.get("cluster_state") != "ok" or fields.get("cluster_slots_ok") != str(SLOTS):
                return False
            if int(fields.get("cluster_known_nodes", "0")) < len(self.nodes):
                return False
        return True

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running node says ``cluster_state:ok`` with all 16384 slots covered."""
        wait_until("cluster_state:ok on every node", self._healthy, timeout, self.nodes)

    def _replicas_in_sync(self) -> bool:
        grouped = self.roles()
        for primary in grouped["master"]:
            replicas = [node for node in grouped["slave"] if self._master_port(node) == primary.port]
            if len(replicas) < self.replicas_per_primary or not _replication_in_sync(primary, replicas):
                return False
        return True

    @staticmethod
    def _master_port(node: RedisServer) -> int:
        return int(info_fields(node, "replication").get("master_port", "0"))

    def wait_replicas_in_sync(self, timeout: float = 30.0) -> None:
        """Wait until every primary has its replicas, each linked up and caught up with its offset."""
        wait_until("every replica in sync with its primary", self._replicas_in_sync, timeout, self.nodes)

    def _slot_moved(self, slot: int, old_port: int) -> bool:
        """Every running node maps ``slot`` to one node other than ``old_port``, which answers ROLE master."""
        owners = {self._slot_owner_port(node, slot) for node in self.running_nodes()}
        if len(owners) != 1 or None in owners or old_port in owners:
            return False
        (port,) = owners
        return node_command(self._node_by_port(port), "ROLE")[0] == "master" and self._healthy()  # type: ignore[index]

    def fail_over_key(self, key: str, timeout: float = 30.0) -> RedisServer:
        """SIGKILL the primary of ``key``'s slot, wait for a replica to take it over, restart the killed
        node (same port, data and nodes file) and wait until it replicates the new primary; the new primary.
        """
        slot = self.keyslot(key)
        old = self.primary_for_key(key)
        log.info("killing cluster primary %r of slot %s", old, slot)
        old.kill()
        wait_until(f"a replica to take over slot {slot}", lambda: self._slot_moved(slot, old.port), timeout, self.nodes)
        new = self.primary_for_key(key)
        old.start()
        wait_until(
            f"{old!r} to rejoin as a replica of {new!r}",
            lambda: self._master_port(old) == new.port and _replication_in_sync(new, [old]),
            timeout, self.nodes,
        )  # fmt: skip
        self.wait_healthy(timeout)
        return new


# ---------------------------------------------------------------------------------------------
# Redis Sentinel
# ---------------------------------------------------------------------------------------------


class SentinelServer(RedisServer):
    """``redis-server sentinel.conf --sentinel`` in its own directory (Sentinel rewrites its config file)."""

    name = "redis-sentinel"

    def __init__(self, data_dir: str | os.PathLike[str], monitor_lines: list[str]) -> None:
        super().__init__(data_dir, appendonly=False)
        self.name = "redis-sentinel"
        self.monitor_lines = monitor_lines

    @property
    def config_path(self) -> Path:
        """The sentinel's own (rewritten) configuration file."""
        return self.data_dir / "sentinel.conf"

    def command(self) -> list[str]:
        """Write the config on first start (later starts keep Sentinel's rewrite), then the argument vector."""
        if not self.config_path.exists():
            self.config_path.write_text("\n".join(self.monitor_lines) + "\n")
        return [
            self.binary, str(self.config_path), "--sentinel",
            "--bind", self.host, "--port", str(self.port), "--dir", str(self.data_dir),
            "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip


class RedisSentinelTopology(_Topology):
    """One primary, one replica (``--replicaof``) and three sentinels monitoring them as ``service``."""

    down_after_ms = 1000

    def __init__(self, tmp_dir: str | os.PathLike[str], service: str = "sgprimary") -> None:
        self.tmp_dir = Path(tmp_dir)
        self.service = service
        self.data_nodes = [
            RedisServer(self.tmp_dir / name, appendfsync="always") for name in ("primary", "replica")
        ]
        self.sentinels: list[SentinelServer] = []

    def servers(self) -> list[RedisServer]:
        """Sentinels first (so they do not fail over while the data nodes stop), then the data nodes."""
        return [*self.sentinels, *self.data_nodes]

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/SERVICE/0``."""
        hosts = ",".join(f"{LOOPBACK}:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def _monitor_lines(self, primary_port: int) -> list[str]:
        name = self.service
        return [
            f"sentinel monitor {name} {LOOPBACK} {primary_port} 2",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} 5000",
            f"sentinel parallel-syncs {name} 1",
        ]

    def start(self) -> Self:
        """Primary, then the replica (waits until in sync), then the sentinels (waits until they see all)."""
        primary, replica = self.data_nodes
        primary.start()
        replica.extra_args = ("--replicaof", LOOPBACK, str(primary.port))
        replica.start()
        self.wait_replicas_in_sync()
        lines = self._monitor_lines(primary.port)
        self.sentinels = [SentinelServer(self.tmp_dir / f"sentinel{i}", lines) for i in range(3)]
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until("every sentinel to know the replica and the other sentinels", self._sentinels_ready, 30.0,
                   self.servers())
        return self

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            replicas = node_command(sentinel, "SENTINEL", "REPLICAS", self.service)
            others = node_command(sentinel, "SENTINEL", "SENTINELS", self.service)
            if len(replicas) < 1 or len(others) < len(self.sentinels) - 1:  # type: ignore[arg-type]
                return False
        return True

    def _node_by_port(self, port: int) -> RedisServer:
        for node in self.data_nodes:
            if node.port == port:
                return node
        raise TopologyError(f"no data node of this deployment listens on port {port}")

    def _primary_port_of(self, sentinel: SentinelServer) -> int:
        _host, port = node_command(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)  # type: ignore[misc]
        return int(port)

    def primary(self) -> RedisServer:
        """The data node a running sentinel names as the primary (``SENTINEL GET-MASTER-ADDR-BY-NAME``)."""
        running = [sentinel for sentinel in self.sentinels if sentinel.running]
        return self._node_by_port(self._primary_port_of(running[0]))

    def replicas(self) -> list[RedisServer]:
        """The data nodes other than :meth:`primary`."""
        primary = self.primary()
        return [node for node in self.data_nodes if node is not primary]

    def wait_replicas_in_sync(self, timeout: float = 30.0) -> None:
        """Wait until the replica has the primary as master, its link up, and the primary's offset replayed."""
        def check() -> bool:
            if self.sentinels:
                primary, replicas = self.primary(), self.replicas()
            else:
                primary, replicas = self.data_nodes[0], self.data_nodes[1:]
            return _replication_in_sync(primary, [r for r in replicas if r.running])

        wait_until("the replica in sync with the primary", check, timeout, self.data_nodes)

    def _switched_to(self, new: RedisServer) -> bool:
        """Every sentinel names ``new`` as primary and ``new`` answers ROLE master."""
        if any(self._primary_port_of(sentinel) != new.port for sentinel in self.sentinels):
            return False
        return node_command(new, "ROLE")[0] == "master"  # type: ignore[index]

    def switch_over(self, timeout: float = 30.0) -> RedisServer:
        """A graceful failover (``SENTINEL FAILOVER``): the primary is demoted to a replica while it runs
        (Sentinel also closes its client connections); waits until the replica is promoted and the old
        primary replicates it in sync; the new primary.
        """
        (new,) = self.replicas()
        running = next(sentinel for sentinel in self.sentinels if sentinel.running)
        node_command(running, "SENTINEL", "FAILOVER", self.service)
        wait_until(f"the sentinels to promote {new!r}", lambda: self._switched_to(new), timeout, self.servers())
        self.wait_replicas_in_sync(timeout)
        return new

    def fail_over(self, timeout: float = 30.0) -> RedisServer:
        """SIGKILL the primary, wait until the sentinels promote the replica, restart the old primary as a
        replica of the new one (``--replicaof``, as Sentinel would reconfigure it) and wait until it is in
        sync; the new primary.
        """
        old = self.primary()
        (new,) = self.replicas()
        log.info("killing sentinel-monitored primary %r", old)
        old.kill()
        wait_until(f"the sentinels to promote {new!r}", lambda: self._switched_to(new), timeout, self.servers())
        old.extra_args = ("--replicaof", LOOPBACK, str(new.port))
        old.start()
        self.wait_replicas_in_sync(timeout)
        return new


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


def _skip_without_binaries() -> None:
    """Skip the test when redis-server or redis-cli is not installed (the only reason to skip)."""
    try:
        find_redis_server()
        find_redis_cli()
    except LocalStackError as exc:
        pytest.skip(f"needs a local redis-server and redis-cli: {exc}")


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterTopology]:
    """A 3-primary, 3-replica Redis Cluster of this test module: ``.url``, ``fail_over_key(key)``."""
    _skip_without_binaries()
    with RedisClusterTopology(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelTopology]:
    """A primary, a replica and three sentinels of this test module: ``.url``, ``fail_over()``."""
    _skip_without_binaries()
    with RedisSentinelTopology(tmp_path_factory.mktemp("redis-sentinel")) as sentinel:
        yield sentinel
