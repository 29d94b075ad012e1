"""Shared test settings.

Training tests are tiny, so PyTorch's intra-op thread pool only adds overhead, and on a
busy machine (other experiments running) its spinning threads make steps 5-10x slower.
One thread keeps the suite fast and its timings predictable.

Session-scoped ``redis_server`` and ``kafka_server`` fixtures start a throwaway Redis and an
in-memory Tansu broker on free ports (see :mod:`sketchgen.local_stack`); tests that kill or
restart servers in ways that break others should start their own.
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A Redis (or Valkey) server of this test session, AOF on: ``.url``, ``.restart()``."""
    from sketchgen.local_stack import RedisServer

    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory):
    """An in-memory Tansu Kafka broker of this test session: ``.bootstrap``."""
    from sketchgen.local_stack import KafkaBroker

    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as server:
        yield server


@pytest.fixture
def store(redis_server):
    """A SketchStore on the session's Redis, emptied first (a test module may define its own)."""
    from sketch_store.redis_connect import connect
    from sketch_store.redis_store import SketchStore

    client = connect(redis_server.url)
    client.flushdb()
    yield SketchStore(client)
    client.close()
