"""A learner of a typed stream serves records: ``/sample`` answers ``{"fields", "records"}``; so does the CLI.

Real Redis and a real :class:`LearnerService` with its HTTP API: a stream of typed records (a 3-level category, a
bool, a nullable float) is flushed straight into Redis as a sketch of encoded records; the learner trains, serves
a snapshot with the typed heads and writes a checkpoint, which ``sketchgen sample NAME`` reads back from Redis.
A numeric stream keeps its ``{"samples": …}`` body.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch

from learner.generator import Generator, GeneratorConfig
from learner.serving import ServedModel
from learner.typed_heads import TypedHeads
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.schema import Field, Schema
from sketch_store.spec import SketchSpec
from sketch_store.typed_encoding import Encoder, fit_encoding_stats
from sketchgen.cli import main
from tests.processes import get, wait_for
from tests.test_learner_checkpoints import feed, new_stream, running
from tests.test_learner_http import idle_service

pytestmark = pytest.mark.slow

SCHEMA = Schema((Field("cut", "category", ("a", "b", "c")), Field("flag", "bool"),
                 Field("amount", "float", nullable=True)))
GCONF = GeneratorConfig(latent=4, hidden=(32, 32), output=2)


def typed_records(n: int = 3000, seed: int = 0) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    return [{"cut": str(rng.choice(["a", "b", "c"], p=[0.1, 0.3, 0.6])), "flag": bool(rng.random() < 0.6),
             "amount": None if rng.random() < 0.2 else float(rng.normal(5, 2))} for _ in range(n)]


def typed_stream(redis_url: str) -> tuple[SketchStore, str, Encoder]:
    """A stream of typed records flushed straight into Redis: (its store, its name, its encoder)."""
    store = SketchStore(connect(redis_url))
    name = f"typed-{uuid.uuid4().hex[:8]}"
    records = typed_records()
    encoder = Encoder(SCHEMA, fit_encoding_stats(SCHEMA, records))
    spec = SketchSpec.create(d=encoder.dim, m=64, seed=0, sigma=1.0, name=name, schema=SCHEMA,
                             encoding=encoder.stats)
    store.create_stream(spec)
    feed(store, name, encoder.encode_many(records))
    return store, name, encoder


def test_sample_of_a_typed_stream_returns_records_and_the_cli_decodes_its_checkpoint(redis_server, tmp_path):
    _, name, encoder = typed_stream(redis_server.url)
    with running(redis_server.url, name, generator=GCONF, checkpoint_every=0.5) as (service, port, _):
        wait_for(lambda: service.model is not None and service.model.steps > 0, 60, "a served typed model")
        assert isinstance(service.model.generator.heads, TypedHeads)
        code, body = get(port, "/sample?n=200")
        assert code == 200 and set(body) == {"fields", "records"}
        assert body["fields"] == ["cut", "flag", "amount"] and len(body["records"]) == 200
        for record in body["records"]:
            assert set(record) == {"cut", "flag", "amount"} and record["cut"] in {"a", "b", "c"}
            assert isinstance(record["flag"], bool)
            assert record["amount"] is None or isinstance(record["amount"], float)
        assert get(port, "/sample?n=0")[0] == 400
        wait_for(lambda: service.checkpoint_saved is not None, 60, "a checkpoint in Redis")
    out = tmp_path / "records.jsonl"
    assert main(["sample", name, "-n", "300", "--seed", "1", "--out", str(out), "--redis", redis_server.url]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 300 and all(r["cut"] in {"a", "b", "c"} for r in records)
    # numbers are clipped to the range the stream folded (its bounds, kept beside the sum in Redis)
    amounts = [r["amount"] for r in typed_records() if r["amount"] is not None]
    assert service.model.encoder.stats.ranges["amount"] == pytest.approx((min(amounts), max(amounts)), rel=1e-12)
    # a record file keeps 8 significant digits (sketchgen.typed_files.FLOAT_DIGITS), so a sample clipped to a
    # bound is written rounded, possibly just past the raw min/max (it failed whenever a sample hit a bound)
    slack = 1e-7 * max(abs(min(amounts)), abs(max(amounts)))
    assert all(min(amounts) - slack <= r["amount"] <= max(amounts) + slack for r in records if r["amount"] is not None)
    assert all(isinstance(r["flag"], bool) for r in records)
    assert encoder.encode_many(records).shape == (300, encoder.dim)  # every written record is a valid one
    assert len({r["cut"] for r in records}) > 1  # sampled from the softmax, not one arg-max everywhere


def test_a_numeric_stream_keeps_its_samples_body(redis_server):
    _, name = new_stream(redis_server.url, "numbody")
    with running(redis_server.url, name, generator=GCONF) as (service, port, _):
        wait_for(lambda: service.model is not None, 60, "a served model")
        assert service.model.encoder is None and service.model.generator.heads is None
        code, body = get(port, "/sample?n=7")
        assert code == 200 and set(body) == {"samples"} and np.asarray(body["samples"]).shape == (7, 2)


class NaNAmounts(Generator):
    """A typed generator whose ``amount`` coordinate is NaN in every sample (a diverged model)."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = super().forward(u).clone()
        y[:, 4] = float("nan")
        return y


def test_a_typed_model_with_non_finite_samples_answers_503_not_records(redis_server):
    _, name, encoder = typed_stream(redis_server.url)
    assert encoder.column_names[4] == "amount"
    with idle_service(redis_server.url, name) as (service, port):
        config = GeneratorConfig(latent=2, hidden=(4,), output=encoder.dim)
        service.model = ServedModel(NaNAmounts(config, TypedHeads(encoder)).eval(), np.zeros(encoder.dim),
                                    np.ones(encoder.dim), service.spec.fingerprint, "test", 1, encoder)
        code, body = get(port, "/sample?n=200")  # 200 rows: some draw a value, not null (each is null w.p. ~1/2)
        assert code == 503 and "cannot be decoded" in body["error"] and "NaN" in body["error"]
