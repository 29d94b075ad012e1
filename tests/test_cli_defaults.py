"""Each ``sketchgen learn`` / ``sketchgen ingest`` flag defaults to the settings field it fills, written once.

The flags read their defaults from :class:`learner.config.LearnConfig` and :class:`ingest.config.IngestConfig`
(:mod:`sketchgen.config_defaults`); these tests fail if a flag gets a default of its own that differs, or if its
help text prints another number than the one in force.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from ingest.config import ENV_STOP_TIMEOUT, IngestConfig, resolve_stop_timeout
from learner.config import LearnConfig
from sketchgen.cli import build_parser
from sketchgen.config_defaults import default
from sketchgen.settings import Connections

#: ``sketchgen ingest`` flag dest → IngestConfig field, where the names differ.
INGEST_FIELDS = {"stall_timeout": "stall_timeout_s", "max_record_bytes": "max_value_bytes",
                 "stop_timeout": "stop_timeout_s"}
#: Flags that fill no settings field with a default (the learner's HTTP port is the server's, not the replica's;
#: ``--kafka`` is a connection option, resolved by sketchgen.settings: its test is below).
NOT_SETTINGS = {"name", "port", "topic", "group", "dlq", "help", "func", "uses_kafka", "uses_redis", "kafka"}


def sub_parser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (subs,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return subs.choices[name]


def tuning_actions(name: str, config: type) -> list[tuple[argparse.Action, dataclasses.Field]]:
    """The command's own flags (not the connection options) and the config field each fills."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    out = []
    for action in sub_parser(name)._actions:
        field = INGEST_FIELDS.get(action.dest, action.dest) if config is IngestConfig else action.dest
        if action.dest not in NOT_SETTINGS and field in fields:
            out.append((action, fields[field]))
    return out


def test_the_learn_flags_cover_the_config_fields_they_set():
    dests = {a.dest for a, _ in tuning_actions("learn", LearnConfig)}
    assert dests == {"target", "steps_per_round", "checkpoint_every", "device", "lease_ttl",
                     "drift_false_alarms_per_day", "drift_threshold", "history_size", "max_concurrent_samples"}


def test_the_ingest_flags_cover_the_config_fields_they_set():
    dests = {a.dest for a, _ in tuning_actions("ingest", IngestConfig)}
    assert dests == {"metrics_port", "stall_timeout", "stop_timeout", "flush_ms", "flush_records",
                     "max_record_bytes"}


@pytest.mark.parametrize(("command", "config"), [("learn", LearnConfig), ("ingest", IngestConfig)])
def test_each_flag_defaults_to_its_config_field(command, config):
    for action, field in tuning_actions(command, config):
        if action.dest == "stop_timeout":  # None: flag, then SKETCHGEN_STOP_TIMEOUT, then the field's default
            assert action.default is None
            assert resolve_stop_timeout(None, env={}) == field.default
            continue
        assert action.default == field.default, f"{command} --{action.dest}: {action.default!r} != {field.default!r}"
        assert type(action.default) is type(field.default)


@pytest.mark.parametrize(("command", "config"), [("learn", LearnConfig), ("ingest", IngestConfig)])
def test_a_default_printed_in_the_help_is_the_one_in_force(command, config):
    for action, field in tuning_actions(command, config):
        text = action.help or ""
        if "(default" not in text or field.default is None:
            continue
        value = field.default
        shown = f"{value >> 20} MiB" if action.dest == "max_record_bytes" else (
            f"{value:g}" if isinstance(value, float) else str(value))
        assert f"default {shown}" in text, f"{command} --{action.dest} help {text!r} does not show {shown}"


def test_the_stop_timeout_still_falls_back_to_the_environment():
    assert resolve_stop_timeout(None, env={ENV_STOP_TIMEOUT: "7.5"}) == 7.5
    assert resolve_stop_timeout(3.0, env={ENV_STOP_TIMEOUT: "7.5"}) == 3.0


def test_the_kafka_bootstrap_default_is_the_ingest_config_one():
    assert Connections.from_args(build_parser().parse_args(["ingest", "s", "--topic", "t"]), env={}).kafka == (
        default(IngestConfig, "kafka"))


def test_reading_the_learn_defaults_imports_no_torch():
    code = ("import sys, sketchgen.config_defaults, learner.config, sketchgen.streaming; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
