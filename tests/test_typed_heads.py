"""Typed output heads (learner/typed_heads.py): ranges, simplex sums, sampling frequencies, numeric models unchanged."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from learner.checkpoint import checkpoint_bytes, load_checkpoint
from learner.generator import Generator, GeneratorConfig
from learner.serving import ServedModel
from learner.trainer import TrainConfig, Trainer
from learner.typed_heads import TypedHeads, sample_rng, sample_typed_rows, typed_heads
from sketch_store.errors import DataError
from sketch_store.schema import Field, Schema
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec
from sketch_store.typed_encoding import Encoder, EncodingStats, fit_encoding_stats

#: SHA-256 of seeded numeric outputs, computed on the code before the typed heads existed.
GENERATOR_HASH = "9ca29b4471d920d6f90644dd7a51ee32a5f0625424b645e65e33d5865d29da26"
TRAINED_HASH = "72fa54479197a4e3ecbb2bea82576ea7a1f4466398c478576b05458a9de8f3fa"

SCHEMA = Schema((
    Field("cut", "category", ("a", "b", "c", "d")),
    Field("flag", "bool"),
    Field("amount", "float", nullable=True),
    Field("seen", "bool", nullable=True),
    Field("tier", "category", ("x", "y"), nullable=True),
    Field("n", "int"),
))
ENC = Encoder(SCHEMA, EncodingStats({"amount": (5.0, 2.0), "n": (3.0, 1.5)}))
C = ENC.stats.category_scale


def block(name: str):
    return next(b for b in ENC.blocks if b.field.name == name)


def cols(name: str) -> slice:
    b = block(name)
    return slice(b.start, b.start + b.width)


def test_a_numeric_generator_and_its_training_are_bit_identical_to_before():
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(latent=3, hidden=(8, 8), output=2))
    out = g.sample(50, generator=torch.Generator().manual_seed(1)).numpy()
    assert hashlib.sha256(out.tobytes()).hexdigest() == GENERATOR_HASH
    spec = SketchSpec.create(d=2, m=16, seed=0)
    trainer = Trainer(spec, GeneratorConfig(latent=2, hidden=(8,), output=2), TrainConfig(batch=64, seed=0))
    assert trainer.generator.heads is None
    trainer.set_target(Sketch.from_data(spec, np.random.default_rng(0).normal(size=(200, 2))))
    trainer.train(steps=5)
    assert hashlib.sha256(trainer.sample(50, seed=2).tobytes()).hexdigest() == TRAINED_HASH


def test_heads_have_no_parameters_and_leave_the_state_dict_alone():
    plain = Generator(GeneratorConfig(latent=2, hidden=(4,), output=ENC.dim))
    typed = Generator(GeneratorConfig(latent=2, hidden=(4,), output=ENC.dim), TypedHeads(ENC))
    assert list(typed.heads.parameters()) == [] and list(typed.heads.buffers()) == []
    assert list(plain.state_dict()) == list(typed.state_dict())
    assert typed_heads(None) is None and isinstance(typed_heads(ENC), TypedHeads)


def test_head_outputs_lie_in_the_encoded_ranges():
    h = torch.randn(500, ENC.dim, generator=torch.Generator().manual_seed(0)) * 10
    h[:, cols("amount")] = h[:, cols("amount")] * 100  # a numeric value is untouched, however large
    y = TypedHeads(ENC)(h)
    for name in ("cut", "tier"):
        part = y[:, cols(name)]
        assert torch.all(part >= 0) and torch.all(part <= C + 1e-6)  # float32 saturates at the bounds
        assert torch.allclose(part.sum(dim=1), torch.full((500,), C), atol=1e-5)
    for name in ("flag", "seen"):
        assert torch.all(y[:, block(name).start].abs() <= C / math.sqrt(2) + 1e-6)
    for name in ("amount", "seen"):
        b = block(name)
        assert torch.all(y[:, b.indicator] >= 0) and torch.all(y[:, b.indicator] <= b.null_mark + 1e-6)
    assert torch.equal(y[:, block("amount").start], h[:, block("amount").start])
    assert torch.equal(y[:, block("n").start], h[:, block("n").start])


def test_heads_refuse_the_wrong_width():
    with pytest.raises(DataError, match="expect 13 coordinates, got 4"):
        TypedHeads(ENC)(torch.zeros(3, 4))


def head_rows(n: int, probs: dict[str, list[float]]) -> np.ndarray:
    """Head outputs whose blocks have the given probabilities (category slots, true, null)."""
    y = np.zeros((n, ENC.dim))
    y[:, cols("cut")] = C * np.asarray(probs["cut"])
    y[:, cols("tier")] = C * np.asarray(probs["tier"])
    y[:, block("flag").start] = (2 * probs["flag"][0] - 1) * C / math.sqrt(2)
    y[:, block("seen").start] = (2 * probs["seen"][0] - 1) * C / math.sqrt(2)
    y[:, block("amount").indicator] = probs["amount_null"][0] * block("amount").null_mark
    y[:, block("seen").indicator] = probs["seen_null"][0] * block("seen").null_mark
    y[:, block("amount").start] = 1.5
    return y


PROBS = {"cut": [0.05, 0.11, 0.44, 0.40], "tier": [0.3, 0.5, 0.2], "flag": [0.6], "seen": [0.25],
         "amount_null": [0.2], "seen_null": [0.1]}


def test_sampling_frequencies_match_the_probabilities():
    n = 40_000
    rows = sample_typed_rows(ENC, head_rows(n, PROBS), np.random.default_rng(0))
    records = ENC.decode_many(rows)
    tol = 4 * math.sqrt(0.25 / n)  # four standard errors of a share

    def share(pred) -> float:
        return sum(map(pred, records)) / n

    for value, p in zip("abcd", PROBS["cut"], strict=True):
        assert share(lambda r, v=value: r["cut"] == v) == pytest.approx(p, abs=tol)
    for value, p in zip(["x", "y", None], PROBS["tier"], strict=True):
        assert share(lambda r, v=value: r["tier"] == v) == pytest.approx(p, abs=tol)
    assert share(lambda r: r["flag"] is True) == pytest.approx(0.6, abs=tol)
    assert share(lambda r: r["amount"] is None) == pytest.approx(0.2, abs=tol)
    assert share(lambda r: r["seen"] is None) == pytest.approx(0.1, abs=tol)
    present = [r["seen"] for r in records if r["seen"] is not None]
    assert sum(present) / len(present) == pytest.approx(0.25, abs=2 * tol)
    assert {r["amount"] for r in records} == {None, 1.5 * 2.0 + 5.0}


def test_sampled_rows_are_encoded_records():
    rows = sample_typed_rows(ENC, head_rows(300, PROBS), np.random.default_rng(1))
    assert np.array_equal(rows, ENC.encode_many(ENC.decode_many(rows)))


def test_sampling_is_seeded_and_clips_rows_outside_the_ranges():
    y = head_rows(1000, PROBS)
    first = sample_typed_rows(ENC, y, sample_rng(7))
    assert np.array_equal(first, sample_typed_rows(ENC, y, sample_rng(7)))
    assert not np.array_equal(first, sample_typed_rows(ENC, y, sample_rng(8)))
    wild = np.full((200, ENC.dim), -3.0)
    wild[:, block("cut").start + 2] = 5.0  # one positive slot: always drawn
    records = ENC.decode_many(sample_typed_rows(ENC, wild, np.random.default_rng(0)))
    assert {r["cut"] for r in records} == {"c"}
    assert {r["flag"] for r in records} == {False} and {r["tier"] for r in records} <= {"x", "y", None}
    assert all(r["amount"] is not None for r in records)


def test_sampling_refuses_rows_of_the_wrong_shape():
    with pytest.raises(DataError, match="dimension 13"):
        sample_typed_rows(ENC, np.zeros((2, 5)), np.random.default_rng(0))


def typed_trainer() -> Trainer:
    schema = Schema((Field("cut", "category", ("a", "b", "c")), Field("x", "float", nullable=True)))
    rng = np.random.default_rng(0)
    records = [{"cut": str(rng.choice(["a", "b", "c"], p=[0.1, 0.3, 0.6])),
                "x": None if rng.random() < 0.2 else float(rng.normal())} for _ in range(400)]
    encoder = Encoder(schema, fit_encoding_stats(schema, records))
    spec = SketchSpec.create(d=encoder.dim, m=32, seed=0, schema=schema, encoding=encoder.stats)
    trainer = Trainer(spec, GeneratorConfig(latent=2, hidden=(16,), output=encoder.dim), TrainConfig(batch=64, seed=0))
    trainer.set_target(Sketch.from_data(spec, encoder.encode_many(records)))
    trainer.train(steps=3)
    return trainer


def test_trainer_checkpoint_and_snapshot_of_a_typed_spec_apply_the_same_heads():
    trainer = typed_trainer()
    assert isinstance(trainer.generator.heads, TypedHeads)
    ckpt = load_checkpoint(checkpoint_bytes(trainer))
    rebuilt = ckpt.build_generator()
    assert isinstance(rebuilt.heads, TypedHeads)
    u = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt(u), trainer.served_generator.eval()(u))
    snapshot = ServedModel.from_checkpoint(ckpt, "i1")
    encoder = ckpt.encoder
    for rows in (ckpt.sample(50, seed=3), trainer.sample(50, seed=3), snapshot.sample(50, seed=3),
                 ServedModel.from_trainer(trainer, "i1").sample(50, seed=3)):
        assert np.allclose(rows, encoder.encode_many(encoder.decode_many(rows)), rtol=0, atol=1e-12)
    assert np.array_equal(ckpt.sample(50, seed=3), snapshot.sample(50, seed=3))
    body = snapshot.sample_body(10, seed=1)
    assert body["fields"] == ["cut", "x"] and len(body["records"]) == 10
    assert {r["cut"] for r in body["records"]} <= {"a", "b", "c"}
