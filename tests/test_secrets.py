"""Redis passwords never reach an error message, a log line or an output.

A throwaway ``redis-server --requirepass`` of this module (never the session's or 6379's Redis) is the
server every command talks to. The commands run as real ``python -m sketchgen`` processes, and every
byte they write (stdout and stderr) is searched for the password. The password also comes from
``SKETCHGEN_REDIS_PASSWORD`` or a file (``--redis-password-file`` / ``SKETCHGEN_REDIS_PASSWORD_FILE``),
which take precedence over a URL's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from sketch_store.errors import SketchgenError
from sketch_store.redis_connect import check_reachable, connect, redact_url
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.cli import build_parser, main
from sketchgen.local_stack import RedisServer, free_port
from tests.processes import get, wait_for

PASSWORD = "Sk3tch-s3cret-7f1e9a"      # URL-safe: fits in a URL as written
WRONG = "Wr0ng-pa55-c4d2b8"           # what a mistyped URL carries
ODD = "p@ss/w:rd?#%&=x y"             # needs percent-encoding in a URL; fine in the environment or a file
TIMEOUT = 180


class PasswordRedis(RedisServer):
    """A Redis server started with ``--requirepass``; ready when an authenticated PING answers."""

    def __init__(self, data_dir, password: str) -> None:
        super().__init__(data_dir, appendonly=False, extra_args=("--requirepass", password))
        self.password = password

    def probe(self) -> bool:
        client = redis.Redis(host=self.host, port=self.port, password=self.password, socket_timeout=1.0)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def url_with(self, password: str | None) -> str:
        auth = f":{password}@" if password is not None else ""
        return f"redis://{auth}{self.host}:{self.port}/0"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    with PasswordRedis(tmp_path_factory.mktemp("redis-pw"), PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def odd_secured(tmp_path_factory):
    """A Redis whose password has characters a URL cannot hold unencoded."""
    with PasswordRedis(tmp_path_factory.mktemp("redis-odd"), ODD) as server:
        yield server


@pytest.fixture(scope="module")
def stream(secured) -> str:
    """A stream that exists on the password-protected Redis."""
    name = f"secret-{uuid.uuid4().hex[:8]}"
    store = SketchStore(connect(secured.url_with(None), password=PASSWORD))
    store.create_stream(SketchSpec.create(d=2, m=16, law="adapted-radius", sigma=1.0, seed=0, name=name))
    return name


def env_without_sketchgen(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKETCHGEN_")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="", SKETCHGEN_REDIS="redis://127.0.0.1:1/0",
               SKETCHGEN_KAFKA="127.0.0.1:1")
    env.update(extra)
    return env


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sketchgen", *args], env=env_without_sketchgen(**env),
                          capture_output=True, text=True, timeout=TIMEOUT)


def assert_no_secret(result: subprocess.CompletedProcess | str, *secrets: str) -> None:
    text = result if isinstance(result, str) else result.stdout + result.stderr
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked:\n{text}"


def assert_one_error_line(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sketchgen: error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr


# -- redact_url: the user, host, port and db stay; the password goes ------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
    ("redis://alice:pw@localhost:6379/0", "redis://alice:***@localhost:6379/0"),
    ("rediss://alice:p%40ss@redis.example:6380/2", "rediss://alice:***@redis.example:6380/2"),
    ("redis://alice@localhost/0", "redis://alice@localhost/0"),
    ("redis://localhost/0?password=pw&db=1", "redis://localhost/0?password=***&db=1"),
    ("unix://alice:pw@/run/redis.sock?db=0", "unix://alice:***@/run/redis.sock?db=0"),
    # malformed: reserved characters in the password, no scheme, several @
    ("redis://:ab/cd@localhost:6379/0", "redis://:***@localhost:6379/0"),
    ("redis://alice:p@ss@localhost/0", "redis://alice:***@localhost/0"),
    ("redis://:p#ss?x@localhost/0", "redis://:***@localhost/0"),
    ("redis://ab/cd@localhost/0", "redis://***@localhost/0"),
    ("user:pw@localhost:6379", "***@localhost:6379"),
    ("localhost:6379", "localhost:6379"),
    ("", ""),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_an_invalid_url_is_one_error_without_its_password():
    for url, pieces in (("redis://:abcd/efgh@127.0.0.1:6379/0", ("abcd", "efgh")),
                        ("redis://u:wxyz#stuv@127.0.0.1/0", ("wxyz", "stuv")),
                        ("http://:abcd@127.0.0.1/0", ("abcd",))):
        with pytest.raises(SketchgenError, match="invalid Redis URL") as caught:
            connect(url)
        assert_no_secret(str(caught.value), *pieces)
        with pytest.raises(SketchgenError, match="invalid Redis URL") as caught:
            check_reachable(url)
        assert_no_secret(str(caught.value), *pieces)


def test_the_password_is_never_a_flag_value():
    """``--redis-password VALUE`` is refused without echoing it (it would show in ``ps``)."""
    result = run(["status", "x", "--redis-password", PASSWORD])
    assert result.returncode == 2 and "--redis-password is not accepted" in result.stderr, result.stderr
    assert_no_secret(result, PASSWORD)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["status", "x", f"--redis-password={PASSWORD}"])


# -- (a) a wrong password in the URL: one line, no password ---------------------------------------------

def test_a_wrong_password_in_the_url_is_one_line_without_it(secured, stream, tmp_path):
    url = secured.url_with(WRONG)
    commands = {
        "status": ["status", stream, "--redis", url],
        "create": ["create", f"new-{uuid.uuid4().hex[:8]}", "--dim", "2", "--redis", url],
        "ingest": ["ingest", stream, "--topic", "t", "--redis", url, "--kafka", "127.0.0.1:1"],
        "learn": ["learn", stream, "--port", str(free_port()), "--redis", url],
        "export": ["export", stream, "--out", str(tmp_path / "x.npz"), "--redis", url],
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(commands, pool.map(run, commands.values()), strict=True))
    for name, result in results.items():
        assert_no_secret(result, WRONG, PASSWORD)
        assert_one_error_line(result, "refused the credentials")
        assert f"127.0.0.1:{secured.port}" in result.stderr, (name, result.stderr)


def test_a_missing_password_is_one_line(secured, stream):
    result = run(["status", stream, "--redis", secured.url_with(None)])
    assert_one_error_line(result, "refused the credentials")


# -- (b) the password from the environment or a file, over the URL's ------------------------------------

def test_the_environment_password_works_and_wins_over_the_url(secured, stream):
    plain = run(["status", stream, "--json"], SKETCHGEN_REDIS=secured.url_with(None),
                SKETCHGEN_REDIS_PASSWORD=PASSWORD)
    assert plain.returncode == 0, plain.stderr
    assert_no_secret(plain, PASSWORD)
    over_url = run(["status", stream, "--json", "--redis", secured.url_with(WRONG)], SKETCHGEN_REDIS_PASSWORD=PASSWORD)
    assert over_url.returncode == 0, over_url.stderr
    wrong_env = run(["status", stream, "--redis", secured.url_with(PASSWORD)], SKETCHGEN_REDIS_PASSWORD=WRONG)
    assert_one_error_line(wrong_env, "refused the credentials")
    assert_no_secret(wrong_env, WRONG, PASSWORD)


def test_the_password_file_works_and_wins_over_the_environment_and_the_url(secured, stream, tmp_path):
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text(PASSWORD + "\n")  # a mounted Secret's trailing newline is not part of it
    wrong.write_text(WRONG + "\n")
    url = secured.url_with(WRONG)
    flag = run(["status", stream, "--redis", url, "--redis-password-file", str(right)],
               SKETCHGEN_REDIS_PASSWORD=WRONG)
    assert flag.returncode == 0, flag.stderr
    env_file = run(["status", stream, "--redis", url], SKETCHGEN_REDIS_PASSWORD_FILE=str(right))
    assert env_file.returncode == 0, env_file.stderr
    losing = run(["status", stream, "--redis", secured.url_with(PASSWORD), "--redis-password-file", str(wrong)],
                 SKETCHGEN_REDIS_PASSWORD=PASSWORD)
    assert_one_error_line(losing, "refused the credentials")
    missing = run(["status", stream, "--redis-password-file", str(tmp_path / "none")])
    assert_one_error_line(missing, "Redis password file")
    for result in (flag, env_file, losing, missing):
        assert_no_secret(result, PASSWORD, WRONG)


def test_a_password_no_url_could_hold_works_from_the_environment(odd_secured, tmp_path):
    name = f"odd-{uuid.uuid4().hex[:8]}"
    created = run(["create", name, "--dim", "2", "--m", "16"], SKETCHGEN_REDIS=odd_secured.url_with(None),
                  SKETCHGEN_REDIS_PASSWORD=ODD)
    assert created.returncode == 0, created.stderr
    secret_file = tmp_path / "odd"
    secret_file.write_text(ODD)
    status = run(["status", name, "--redis", odd_secured.url_with(None), "--redis-password-file", str(secret_file)])
    assert status.returncode == 0 and name in status.stdout, status.stderr
    assert_no_secret(status, ODD)


# -- (c) unreachable or malformed, with a password: no password -----------------------------------------

def test_an_unreachable_redis_with_a_password_is_one_line_without_it():
    results = [
        run(["status", "x", "--redis", f"redis://alice:{PASSWORD}@127.0.0.1:1/0"]),
        run(["create", "x", "--dim", "2", "--redis", "redis://127.0.0.1:1/0"], SKETCHGEN_REDIS_PASSWORD=PASSWORD),
        run(["status", "x", "--redis", f"redis://:{PASSWORD[:6]}/{PASSWORD[6:]}@127.0.0.1:1/0"]),
    ]
    for result in results[:2]:
        assert_one_error_line(result, "cannot reach Redis at redis://")
        assert "127.0.0.1:1" in result.stderr
        assert_no_secret(result, PASSWORD)
    assert "alice:***@" in results[0].stderr
    assert_one_error_line(results[2], "invalid Redis URL")
    assert_no_secret(results[2], PASSWORD[:6], PASSWORD[6:])


def test_in_process_errors_do_not_show_the_password(capsys):
    status = main(["status", "x", "--redis", f"redis://:{PASSWORD}@127.0.0.1:1/0"])
    out, err = capsys.readouterr()
    assert status == 2 and "cannot reach Redis" in err
    assert_no_secret(out + err, PASSWORD)


# -- (d) debug logs of running services -----------------------------------------------------------------

def run_service(args: list[str], until, tmp_path, label: str, **env: str) -> str:
    """Start ``sketchgen -v ARGS``, wait for ``until()`` to be true, SIGTERM it; its whole output."""
    log_path = tmp_path / f"{label}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "sketchgen", "-v", *args], env=env_without_sketchgen(**env),
                                stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: until() or proc.poll() is not None, 120, f"{label} to run")
            time.sleep(1.0)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    text = log_path.read_text(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    return text


def test_debug_logs_of_ingest_and_learn_do_not_contain_the_password(secured, stream, kafka_server, tmp_path):
    from kafka import KafkaProducer

    topic = f"secret-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap)
    for i in range(20):
        producer.send(topic, f"[{i}, {i / 2}]".encode())
    producer.flush(30)
    producer.close()
    store = SketchStore(connect(secured.url_with(PASSWORD)))
    metrics, http = free_port(), free_port()
    ingest_log = run_service(
        ["ingest", stream, "--topic", topic, "--metrics-port", str(metrics), "--redis", secured.url_with(PASSWORD),
         "--kafka", kafka_server.bootstrap],
        lambda: store.total_count(stream) >= 20, tmp_path, "ingest",
    )
    assert "DEBUG" in ingest_log
    learn_log = run_service(
        ["learn", stream, "--port", str(http), "--steps-per-round", "5", "--device", "cpu"],
        lambda: get(http, "/status")[0] == 200, tmp_path, "learn",
        SKETCHGEN_REDIS=secured.url_with(None), SKETCHGEN_REDIS_PASSWORD=PASSWORD,
    )
    assert "DEBUG" in learn_log
    for text in (ingest_log, learn_log):
        assert_no_secret(text, PASSWORD)


def test_the_demo_children_get_no_credentials_meant_for_another_redis_or_kafka():
    from sketchgen.demo import demo_child_env

    env = demo_child_env({"SKETCHGEN_REDIS_PASSWORD": "x", "SKETCHGEN_REDIS_PASSWORD_FILE": "/f",
                          "SKETCHGEN_KAFKA_PASSWORD": "y", "PATH": "/bin"})
    assert env == {"PATH": "/bin"}
