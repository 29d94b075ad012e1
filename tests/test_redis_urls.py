"""Parsing and redaction of the multi-host Redis URLs (pure logic: no server is contacted)."""

from __future__ import annotations

import pytest

from sketch_store.errors import SketchgenError
from sketch_store.redis_connect import (
    MultiHostUrl,
    connect,
    connection_options,
    parse_multi_host,
    redact_url,
    scrub,
    secrets_of,
)


def test_sentinel_url_with_credentials_service_and_db() -> None:
    parsed = parse_multi_host("redis+sentinel://alice:s%40cret@10.0.0.1:26379,10.0.0.2:26380/sgprimary/3")
    assert parsed == MultiHostUrl(
        kind="sentinel", tls=False, hosts=(("10.0.0.1", 26379), ("10.0.0.2", 26380)),
        username="alice", password="s@cret", service="sgprimary", db=3,
    )  # fmt: skip


def test_sentinel_defaults_db_0_port_26379_and_no_sentinel_auth() -> None:
    parsed = parse_multi_host("redis+sentinel://s1,s2/svc")
    assert parsed is not None
    assert (parsed.hosts, parsed.db, parsed.sentinel_auth, parsed.password) == (
        (("s1", 26379), ("s2", 26379)), 0, False, None
    )
    assert parse_multi_host("redis+sentinel://s1/svc/0?sentinel_auth=yes").sentinel_auth is True


def test_cluster_url_tls_ipv6_and_default_port() -> None:
    parsed = parse_multi_host("rediss+cluster://:pw@[::1]:7000,n2")
    assert parsed is not None
    assert (parsed.kind, parsed.tls, parsed.hosts, parsed.password, parsed.username) == (
        "cluster", True, (("::1", 7000), ("n2", 6379)), "pw", None
    )
    assert parse_multi_host("redis+cluster://n1:7000/0").db == 0


def test_single_server_urls_are_not_multi_host() -> None:
    for url in ("redis://localhost:6379/0", "rediss://h:6380", "unix:///tmp/redis.sock?db=1"):
        assert parse_multi_host(url) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://:hunter2@/svc", "no HOST:PORT given"),
        ("redis+cluster://:hunter2@", "no HOST:PORT given"),
        ("redis+cluster://:hunter2@n1:port", "the port of 'n1' must be a number from 1 to 65535, not 'port'"),
        ("redis+sentinel://:hunter2@s1:70000/svc", "must be a number from 1 to 65535, not '70000'"),
        ("redis+sentinel://:hunter2@s1:26379", "the Sentinel service name is missing"),
        ("redis+sentinel://:hunter2@s1:26379/svc/x", "the database must be a non-negative integer, not 'x'"),
        ("redis+sentinel://:hunter2@s1/svc/0/9", "too many path parts"),
        ("redis+cluster://:hunter2@n1:7000/2", "a cluster has only database 0"),
        ("redis+cluster://:hunter2@n1:7000?sentinel_auth=yes", "unknown option sentinel_auth"),
        ("redis+sentinel://:hunter2@s1/svc?tls=1", "unknown option tls"),
        ("redis+sentinel://:hunter2@s1/svc?sentinel_auth=maybe", "sentinel_auth must be yes or no"),
        ("redis+sentinal://:hunter2@s1/svc", "unknown scheme 'redis+sentinal'"),
        ("redis+cluster://:hunter2@[::1:7000", "bad IPv6 host"),
    ],
)
def test_bad_urls_give_one_line_without_the_password(url: str, reason: str) -> None:
    with pytest.raises(SketchgenError) as caught:
        connect(url)
    message = str(caught.value)
    assert reason in message and "\n" not in message
    assert "hunter2" not in message and message.startswith("invalid Redis URL '")


def test_connection_options_refuses_a_multi_host_url() -> None:
    with pytest.raises(SketchgenError, match="names several servers"):
        connection_options("redis+cluster://:hunter2@n1:7000")


def test_redaction_of_multi_host_urls() -> None:
    url = "redis+sentinel://bob:p%2Fw@s1:26379,s2:26379/svc/1"
    assert redact_url(url) == "redis+sentinel://bob:***@s1:26379,s2:26379/svc/1"
    assert set(secrets_of(url, "given")) == {"p%2Fw", "p/w", "given"}
    assert scrub("AUTH p/w and given failed", url, "given") == "AUTH *** and *** failed"
    unencoded = "rediss+cluster://:a@b/c@n1:7000,n2:7001"
    assert redact_url(unencoded) == "rediss+cluster://:***@n1:7000,n2:7001"


def test_password_argument_replaces_the_urls() -> None:
    client = connect("redis+sentinel://:fromurl@127.0.0.1:1/svc/2", password="given")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["db"]) == ("given", 2)
    client.close()
