"""Connecting to Redis: a retrying client for services, a no-retry reachability check for commands.

Example
-------
>>> client = connect("redis://localhost:6379/0")  # lazy: nothing is sent yet
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from sketch_store.errors import SketchgenError


def connect(url: str, retries: int = 30, socket_timeout: float = 10.0) -> redis.Redis:
    """A Redis client that retries connection errors with exponential backoff (≈ 50 s in all).

    ``url`` is ``redis://[user:pass@]host:port/db`` (or ``rediss://`` for TLS).
    """
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=5.0,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            health_check_interval=30,
        )
    except ValueError as exc:
        raise SketchgenError(f"invalid Redis URL {url!r}: {exc}") from None


def check_reachable(url: str) -> None:
    """Fail fast with one clear message when Redis at ``url`` does not answer (no retries)."""
    try:
        quick = redis.Redis.from_url(url, socket_connect_timeout=3.0, socket_timeout=3.0, retry=Retry(NoBackoff(), 0))
    except ValueError as exc:
        raise SketchgenError(f"invalid Redis URL {url!r}: {exc}") from None
    try:
        quick.ping()
    except redis.AuthenticationError as exc:
        raise SketchgenError(f"Redis at {url} refused the credentials: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise SketchgenError(f"cannot reach Redis at {url}: {exc}") from None
    finally:
        quick.close()
