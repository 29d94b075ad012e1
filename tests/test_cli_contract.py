"""Every ``sketchgen`` sub-command takes the same connection options (docs/deploy.md).

``--kafka BOOTSTRAP`` and ``--redis URL`` (falling back to ``SKETCHGEN_KAFKA`` / ``SKETCHGEN_REDIS``), the
Kafka security flags and ``--redis-password-file`` are accepted by every sub-command, so that one set of
flags or one environment fits every command of a deployment; a command that does not use Kafka or Redis
ignores those settings (it never reads or validates them). The sub-commands are found in the parser, so a
new one is covered without editing this file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

from ingest.kafka_security import KafkaSecurity
from sketch_store.errors import SketchgenError
from sketchgen.cli import build_parser
from sketchgen.settings import Connections

KAFKA, REDIS = "x:1", "redis://redis.example:6380/3"
TIMEOUT = 180


def sub_commands() -> dict[str, argparse.ArgumentParser]:
    """Name → parser of every sub-command of ``sketchgen``."""
    parser = build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subs) == 1
    return dict(subs[0].choices)


def placeholder(action: argparse.Action) -> str:
    """A value ``action`` accepts."""
    if action.choices:
        return str(next(iter(action.choices)))
    return "1" if action.type in (int, float) else "x"


def required_args(parser: argparse.ArgumentParser) -> list[str]:
    """The positionals, required options and one option of each required group, with values they accept."""
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings and action.nargs != 0:
            argv.append(placeholder(action))
        elif action.required:
            argv += [action.option_strings[0], placeholder(action)]
    for group in parser._mutually_exclusive_groups:
        if group.required:
            first = group._group_actions[0]
            argv += [first.option_strings[0]] + ([] if first.nargs == 0 else [placeholder(first)])
    return argv


COMMANDS = sub_commands()


def test_the_parser_has_the_known_commands():
    known = {"create", "status", "export", "learn", "ingest", "up", "demo", "produce", "sketch", "fit", "sample",
             "plot"}
    assert known <= set(COMMANDS), known - set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_accepts_kafka_and_redis(name):
    base = [name, *required_args(COMMANDS[name])]
    parser = build_parser()
    args = parser.parse_args([*base, "--kafka", KAFKA, "--redis", REDIS, "--redis-password-file", "/run/pw",
                              "--kafka-security-protocol", "SSL"])
    assert (args.kafka, args.redis, args.redis_password_file) == (KAFKA, REDIS, "/run/pw")
    assert args.kafka_security_protocol == "SSL"
    # without the flags, the environment
    conn = Connections.from_args(parser.parse_args(base), env={"SKETCHGEN_KAFKA": KAFKA, "SKETCHGEN_REDIS": REDIS})
    assert (conn.kafka, conn.redis) == (KAFKA, REDIS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_command_takes_a_password_as_a_flag_value(name, capsys):
    base = [name, *required_args(COMMANDS[name])]
    for flag in ("--redis-password", "--kafka-password"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, flag, "hunter2-secret"])
        err = capsys.readouterr().err
        assert f"{flag} is not accepted" in err and "hunter2-secret" not in err, err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_settings_of_an_unused_service_are_never_read(name, tmp_path):
    """A command without Redis does not read a password file; one without Kafka does not validate its security."""
    base = [name, *required_args(COMMANDS[name])]
    args = build_parser().parse_args([*base, "--redis-password-file", str(tmp_path / "missing")])
    if args.uses_redis:
        with pytest.raises(SketchgenError, match="cannot read the Redis password file"):
            Connections.from_args(args, env={})
    else:
        assert Connections.from_args(args, env={}).redis_password is None
    args, env = build_parser().parse_args(base), {"SKETCHGEN_KAFKA_SECURITY_PROTOCOL": "bogus"}
    if args.uses_kafka:
        with pytest.raises(SketchgenError, match="bogus"):
            Connections.from_args(args, env=env)
    else:
        assert Connections.from_args(args, env=env).kafka_security == KafkaSecurity()


def test_which_commands_use_what():
    uses = {name: (p.get_default("uses_kafka"), p.get_default("uses_redis")) for name, p in COMMANDS.items()}
    assert uses["ingest"] == (True, True) and uses["produce"] == (True, False)
    assert uses["create"] == uses["status"] == uses["export"] == uses["learn"] == uses["sample"] == (False, True)
    assert uses["sketch"] == uses["fit"] == uses["plot"] == (False, False)


# -- as processes ---------------------------------------------------------------------------------------


def run(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKETCHGEN_")}
    env.update(OMP_NUM_THREADS="1", SKETCHGEN_REDIS="redis://127.0.0.1:1/0", SKETCHGEN_KAFKA="127.0.0.1:1",
               SKETCHGEN_KAFKA_SECURITY_PROTOCOL="bogus")  # ignored by commands without Kafka
    return subprocess.run([sys.executable, "-m", "sketchgen", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT)


def test_redis_commands_run_with_both_flags(redis_server, tmp_path):
    from sketch_store.features import FeatureMap
    from sketch_store.redis_connect import connect
    from sketch_store.redis_store import SketchStore

    name = f"contract-{uuid.uuid4().hex[:8]}"
    flags = ["--kafka", "x:1", "--redis", redis_server.url]
    created = run(["create", name, "--dim", "2", "--m", "8", *flags], tmp_path)
    assert created.returncode == 0, created.stderr
    store = SketchStore(connect(redis_server.url))
    spec = store.get_spec(name)
    total, n = FeatureMap(spec).feature_sum(np.zeros((3, 2)))
    store.flush(name, store.claim(name, "t", 0), 0, 3, total, n)  # three records, as an ingest worker writes them
    status = run(["status", name, "--json", *flags], tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["stream"] == name
    exported = run(["export", name, "--out", "s.npz", *flags], tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "s.npz").is_file()


def test_an_offline_command_ignores_both(tmp_path):
    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=(200, 2)))
    result = run(["sketch", "d.npy", "--out", "s.npz", "--m", "8", "--kafka", "x:1", "--redis", "redis://127.0.0.1:1/0",
                  "--redis-password-file", str(tmp_path / "missing")], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s.npz").is_file()
