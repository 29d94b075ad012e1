"""Kafka TLS/SASL settings: validation and the mapping to kafka-python (pure logic), the command line's
one-line errors, the manifests' Secret wiring, and real clients against a Tansu broker that requires
authentication.

What the embedded broker allows (Tansu 0.6, measured): ``--authentication`` makes it demand SASL and it
offers SCRAM-SHA-256/512 only (a PLAIN handshake is refused with ``NoSharedMechanism``). Its users live in
its storage and can only be created by an authenticated client, so the in-memory engine can never hold
one: a *good*-credentials run is impossible on it, and TLS (``--cert``/``--key``) does not answer a TLS
handshake in this build. What is tested for real: every client honours the settings on the wire (a
SCRAM handshake reaches the broker, a PLAINTEXT client is refused as unauthenticated) and bad
credentials end in one clear error naming the settings, never the password.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ingest.kafka_connect import client_config, connect_error
from ingest.kafka_security import MECHANISMS, KafkaSecurity
from sketch_store.errors import SketchgenError
from sketchgen.cli import build_parser, main
from sketchgen.local_stack import KafkaBroker
from sketchgen.settings import Connections

SECRET = "pa55-w0rd-never-shown"


@pytest.fixture
def ca_file(tmp_path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n(not checked before connecting)\n-----END CERTIFICATE-----\n")
    return str(path)


# -- validation and mapping -----------------------------------------------------------------------------------


def test_the_default_is_plaintext_and_maps_to_kafka_python():
    assert KafkaSecurity().client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert KafkaSecurity.resolve(env={}).client_kwargs() == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_maps_to_every_kafka_python_keyword(protocol, mechanism, ca_file):
    ca = ca_file if protocol == "SASL_SSL" else None
    security = KafkaSecurity(protocol.lower(), mechanism.lower(), "ingest", SECRET, ca)
    expected = {
        "security_protocol": protocol, "sasl_mechanism": mechanism, "sasl_plain_username": "ingest",
        "sasl_plain_password": SECRET,
    }
    if ca:
        expected["ssl_cafile"] = ca_file
    assert security.client_kwargs() == expected
    assert SECRET not in repr(security) and SECRET not in security.describe()


def test_ssl_with_and_without_a_ca_file(ca_file):
    assert KafkaSecurity("SSL").client_kwargs() == {"security_protocol": "SSL"}  # the system's CAs
    assert KafkaSecurity("SSL", ca_file=ca_file).client_kwargs() == {"security_protocol": "SSL",
                                                                      "ssl_cafile": ca_file}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"protocol": "SASL"}, "unknown Kafka security protocol 'SASL'"),
    ({"protocol": "TLS"}, "expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    ({"protocol": "SASL_SSL", "mechanism": "GSSAPI", "username": "u", "password": "p"},
     "unknown Kafka SASL mechanism 'GSSAPI'"),
    ({"protocol": "SASL_SSL"}, "needs a SASL mechanism"),
    ({"protocol": "SASL_PLAINTEXT", "mechanism": "SCRAM-SHA-256", "password": "p"}, "needs a user name"),
    ({"protocol": "SASL_PLAINTEXT", "mechanism": "SCRAM-SHA-256", "username": "u"}, "needs a password"),
    ({"mechanism": "PLAIN", "username": "u", "password": "p"}, "the security protocol is PLAINTEXT"),
    ({"protocol": "SSL", "username": "u"}, "the security protocol is SSL"),
    ({"protocol": "PLAINTEXT", "ca_file": "/etc/hosts"}, "a Kafka CA file was given but the security protocol"),
    ({"protocol": "SSL", "ca_file": "/no/such/ca.pem"}, "'/no/such/ca.pem' does not exist"),
    ({"protocol": "SSL", "ca_file": "/"}, "is not a file"),
])
def test_bad_settings_fail_with_one_clear_line(kwargs, message):
    with pytest.raises(SketchgenError, match=None) as info:
        KafkaSecurity(**kwargs)
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_sasl_plain_without_tls_warns(caplog):
    KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "u", "p")
    assert "unencrypted" in caplog.text
    caplog.clear()
    KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "u", "p")
    assert "unencrypted" not in caplog.text


# -- flags, environment and password sources ------------------------------------------------------------------


def test_environment_fallbacks(ca_file):
    env = {
        "SKETCHGEN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SKETCHGEN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SKETCHGEN_KAFKA_USERNAME": "env-user", "SKETCHGEN_KAFKA_PASSWORD": SECRET,
        "SKETCHGEN_KAFKA_CA_FILE": ca_file,
    }
    assert KafkaSecurity.resolve(env=env) == KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "env-user", SECRET, ca_file)


def test_flags_override_the_environment(tmp_path, ca_file):
    env = {"SKETCHGEN_KAFKA_SECURITY_PROTOCOL": "SSL", "SKETCHGEN_KAFKA_USERNAME": "env-user",
           "SKETCHGEN_KAFKA_PASSWORD": "env-password"}
    password = tmp_path / "password"
    password.write_text("file-password\n")  # a mounted Secret's trailing newline is not part of it
    security = KafkaSecurity.resolve("SASL_PLAINTEXT", "PLAIN", "flag-user", str(password), None, env=env)
    assert security == KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "flag-user", "file-password")


def test_password_sources_in_order(tmp_path):
    sasl = {"SKETCHGEN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SKETCHGEN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "SKETCHGEN_KAFKA_USERNAME": "u"}
    file = tmp_path / "pw"
    file.write_text("from-file\r\n")
    assert KafkaSecurity.resolve(env={**sasl, "SKETCHGEN_KAFKA_PASSWORD_FILE": str(file)}).password == "from-file"
    both = {**sasl, "SKETCHGEN_KAFKA_PASSWORD": "from-env", "SKETCHGEN_KAFKA_PASSWORD_FILE": str(file)}
    assert KafkaSecurity.resolve(env=both).password == "from-env"
    with pytest.raises(SketchgenError, match="cannot read the Kafka password file"):
        KafkaSecurity.resolve(env={**sasl, "SKETCHGEN_KAFKA_PASSWORD_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SketchgenError, match="is empty"):
        KafkaSecurity.resolve(password_file=str(tmp_path / "empty"), env=sasl)


def test_empty_environment_values_count_as_unset():
    env = {name: "" for name in ("SKETCHGEN_KAFKA_SECURITY_PROTOCOL", "SKETCHGEN_KAFKA_SASL_MECHANISM",
                                 "SKETCHGEN_KAFKA_USERNAME", "SKETCHGEN_KAFKA_PASSWORD", "SKETCHGEN_KAFKA_CA_FILE")}
    assert KafkaSecurity.resolve(env=env) == KafkaSecurity()


def test_every_kafka_command_has_the_flags_and_no_password_flag(monkeypatch, capsys, ca_file):
    monkeypatch.setenv("SKETCHGEN_KAFKA_PASSWORD", SECRET)
    parser = build_parser()
    for command in (["produce", "t", "--dataset", "spiral"], ["ingest", "s", "--topic", "t"]):
        args = parser.parse_args([*command, "--kafka-security-protocol", "sasl_ssl", "--kafka-sasl-mechanism",
                                  "scram-sha-256", "--kafka-username", "me", "--kafka-ca-file", ca_file])
        security = Connections.from_args(args).kafka_security
        assert security == KafkaSecurity("SASL_SSL", "SCRAM-SHA-256", "me", SECRET, ca_file), command
        for flag in ("--kafka-password", "--kafka-pass", "--kafka-password=" + SECRET):
            with pytest.raises(SystemExit):
                parser.parse_args([*command, *([flag, SECRET] if "=" not in flag else [flag])])
            assert SECRET not in capsys.readouterr().err, flag
    # commands without Kafka ignore the Kafka environment (a learner pod may carry it)
    monkeypatch.setenv("SKETCHGEN_KAFKA_SECURITY_PROTOCOL", "bogus")
    assert Connections.from_args(parser.parse_args(["status", "s"])).kafka_security == KafkaSecurity()


@pytest.mark.parametrize(("env", "message"), [
    ({"SKETCHGEN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs a SASL mechanism"),
    ({"SKETCHGEN_KAFKA_SECURITY_PROTOCOL": "KERBEROS"}, "unknown Kafka security protocol 'KERBEROS'"),
    ({"SKETCHGEN_KAFKA_SECURITY_PROTOCOL": "SSL", "SKETCHGEN_KAFKA_CA_FILE": "/no/ca.pem"}, "does not exist"),
])
@pytest.mark.parametrize("command", [["produce", "t", "--dataset", "spiral"],
                                     ["ingest", "s", "--topic", "t", "--redis", "redis://127.0.0.1:9/0"]])
def test_commands_fail_fast_with_one_line(monkeypatch, capsys, env, message, command):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # nothing listens on these ports: the settings are checked before any connection
    assert main([*command, "--kafka", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sketchgen: error: ") and message in err and "\n" not in err, err


def test_clients_get_the_settings_and_errors_name_them_without_the_password():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        bootstrap = f"127.0.0.1:{listener.getsockname()[1]}"
        security = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "ingest", SECRET)
        config = client_config(bootstrap, security, client_id="x")
    assert config == {"bootstrap_servers": [bootstrap], **security.client_kwargs(), "client_id": "x"}
    text = str(connect_error(bootstrap, security, RuntimeError("boom")))
    assert "SASL_PLAINTEXT, SCRAM-SHA-512 as 'ingest'" in text and "boom" in text and SECRET not in text


# -- the manifests' Secret ----------------------------------------------------------------------------------


def test_the_ingest_pods_read_the_kafka_secret(tmp_path):
    from tests import deploy_assets as assets
    from tests.test_k8s_manifests import container_env

    objects = assets.render("overlays/prod")
    spec = assets.pod_spec(assets.one(objects, "Deployment", "sketchgen-ingest"))
    container = spec["containers"][0]
    redis = {"sketchgen-redis": {"password": "pw"}}
    # without the Secret: PLAINTEXT
    assert KafkaSecurity.resolve(env=container_env(container, objects, redis)) == KafkaSecurity()
    # the CA file the docs name is where the Secret's key ca.crt is mounted
    volume = next(v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == "sketchgen-kafka")
    assert volume["secret"]["optional"] is True
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    ca_path = f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    assert volume["secret"]["items"][0]["key"] == "ca.crt" and ca_path == "/etc/sketchgen/kafka/ca.crt"
    secret = {
        "SKETCHGEN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SKETCHGEN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SKETCHGEN_KAFKA_USERNAME": "sketchgen", "SKETCHGEN_KAFKA_PASSWORD": SECRET,
        "SKETCHGEN_KAFKA_CA_FILE": ca_path,
    }
    env = container_env(container, objects, {**redis, "sketchgen-kafka": secret})
    local_ca = tmp_path / "ca.crt"
    local_ca.write_text("pem")
    assert env["SKETCHGEN_KAFKA_CA_FILE"] == ca_path
    security = KafkaSecurity.resolve(env={**env, "SKETCHGEN_KAFKA_CA_FILE": str(local_ca)})
    assert security == KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "sketchgen", SECRET, str(local_ca))
    assert "ingest" in container["args"]


# -- real clients against a broker that requires authentication ---------------------------------------------


class AuthBroker(KafkaBroker):
    """Tansu with ``--authentication``: every client must authenticate with SASL (SCRAM)."""

    def command(self) -> list[str]:
        return [*super().command(), "--authentication"]

    def probe(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1.0):
            return True  # a Metadata request is refused until authenticated


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SKETCHGEN_")}
    return subprocess.run([sys.executable, "-m", "sketchgen", *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=180)


@pytest.mark.slow
def test_clients_speak_sasl_to_an_authenticating_broker_and_bad_credentials_fail_clearly(
    tmp_path, redis_server
):
    from sketch_store.redis_connect import connect
    from sketch_store.redis_store import SketchStore
    from sketch_store.spec import SketchSpec

    stream = f"auth-{uuid.uuid4().hex[:6]}"
    store = SketchStore(connect(redis_server.url))
    store.create_stream(SketchSpec.create(d=2, m=16, law="gaussian", sigma=1.0, seed=0, name=stream))
    password_file = tmp_path / "password"
    password_file.write_text(SECRET + "\n")
    sasl = {"SKETCHGEN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SKETCHGEN_KAFKA_USERNAME": "sketchgen",
            "SKETCHGEN_KAFKA_PASSWORD_FILE": str(password_file)}
    cases = {  # label: (command, environment)
        "scram-produce": (["produce", "t", "--dataset", "spiral", "--count", "10"],
                          {**sasl, "SKETCHGEN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}),
        "scram-ingest": (["ingest", stream, "--topic", "t", "--redis", redis_server.url],
                         {**sasl, "SKETCHGEN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"}),
        "plain-produce": (["produce", "t", "--dataset", "spiral", "--count", "10"],
                          {**sasl, "SKETCHGEN_KAFKA_SASL_MECHANISM": "PLAIN"}),
        "plaintext-produce": (["produce", "t", "--dataset", "spiral", "--count", "10"], {}),
    }
    brokers = {label: AuthBroker(tmp_path / label) for label in cases}
    try:
        for broker in brokers.values():
            broker.start()

        def run(label: str) -> subprocess.CompletedProcess:
            command, env = cases[label]
            return run_cli([*command, "--kafka", brokers[label].bootstrap], env)

        with ThreadPoolExecutor(len(cases)) as pool:
            results = dict(zip(cases, pool.map(run, cases), strict=True))
    finally:
        for broker in brokers.values():
            broker.stop()
        store.delete_stream(stream)
        store.client.close()
    broker_logs = {label: Path(broker.log_path).read_text(errors="replace") for label, broker in brokers.items()}

    for label, result in results.items():
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 2, (label, result.stderr[-2000:])
        assert last.startswith("sketchgen: error: cannot connect to Kafka at"), (label, last)
        assert SECRET not in result.stderr + result.stdout, label
    for label, mechanism in (("scram-produce", "SCRAM-SHA-512"), ("scram-ingest", "SCRAM-SHA-256"),
                             ("plain-produce", "PLAIN")):
        assert f"(SASL_PLAINTEXT, {mechanism} as 'sketchgen')" in results[label].stderr, label
    assert "(PLAINTEXT)" in results["plaintext-produce"].stderr
    # on the wire: the SCRAM clients authenticated with SASL (never sent an unauthenticated request), the PLAIN
    # client's handshake was refused by this SCRAM-only broker, the PLAINTEXT client was refused as unauthenticated
    assert "NotAuthenticated" not in broker_logs["scram-produce"] + broker_logs["scram-ingest"]
    assert "NoSharedMechanism" in broker_logs["plain-produce"]
    assert "NotAuthenticated" in broker_logs["plaintext-produce"]


def test_verbose_logging_does_not_leak_sasl_credentials(capfd):
    """kafka-python logs every request at DEBUG, a SASL/PLAIN authenticate request included (password in clear);
    `sketchgen -v` keeps that logger at INFO."""
    import logging

    from kafka.protocol.parser import KafkaProtocol
    from kafka.protocol.sasl import SaslAuthenticateRequest

    from sketchgen.cli import main

    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging.getLogger("kafka").level,
             logging.getLogger("kafka.protocol.parser").level)
    try:
        for h in list(root.handlers):
            root.removeHandler(h)
        main(["-v", "status", "no-such-stream", "--redis", "redis://127.0.0.1:1/0"])  # fails fast; sets up logging
        KafkaProtocol(client_id="t").send_request(
            SaslAuthenticateRequest(auth_bytes=b"\x00bob\x00s3cret-pw", version=1))
        err = capfd.readouterr().err
        assert "s3cret-pw" not in err
        logging.getLogger("kafka.protocol.parser").setLevel(logging.DEBUG)  # the default: it would leak
        KafkaProtocol(client_id="t").send_request(
            SaslAuthenticateRequest(auth_bytes=b"\x00bob\x00s3cret-pw", version=1))
        assert "s3cret-pw" in capfd.readouterr().err
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        root.setLevel(saved[0])
        for h in saved[1]:
            root.addHandler(h)
        logging.getLogger("kafka").setLevel(saved[2])
        logging.getLogger("kafka.protocol.parser").setLevel(saved[3])
