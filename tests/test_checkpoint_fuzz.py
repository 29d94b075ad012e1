"""Fuzzing checkpoints: whatever the bytes, only CheckpointError ever escapes — or the checkpoint works.

Each case feeds a blob to the whole path a learner takes: :func:`load_checkpoint`, then
:func:`restore_trainer` into a trainer of the same spec and architecture,
:meth:`Checkpoint.build_generator`, :meth:`Checkpoint.sample` and :meth:`ServedModel.from_checkpoint`.
Each step may refuse with a one-line :class:`CheckpointError`; any other exception fails the test.
Blobs: random bytes; a valid checkpoint with random byte flips and truncations; valid safetensors
whose JSON metadata has keys deleted, added or replaced by random JSON (digest recomputed, so the
checks behind the digest are reached); and valid metadata over deleted, reshaped or retyped tensors.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from learner.checkpoint import DIGEST_KEY, checkpoint_bytes, checkpoint_digest, load_checkpoint, restore_trainer
from learner.generator import GeneratorConfig
from learner.serving import ServedModel
from learner.trainer import TrainConfig, Trainer
from sketch_store.errors import CheckpointError
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec

GCONF = GeneratorConfig(latent=2, hidden=(4, 3), output=2)
SPEC = SketchSpec.create(d=2, m=16, law="gaussian", sigma=1.0, seed=0)
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def trainer() -> Trainer:
    return Trainer(SPEC, GCONF, TrainConfig(batch=32, lr=1e-2, seed=0, ema_decay=0.9))


def valid_blob() -> bytes:
    t = trainer()
    t.set_target(Sketch.from_data(SPEC, np.random.default_rng(0).normal(size=(200, 2))))
    t.train(steps=3)
    return checkpoint_bytes(t, extra={"rounds": 1}, incarnation="inc-1")


BLOB = valid_blob()
HEADER_END = 8 + struct.unpack("<Q", BLOB[:8])[0]
META = json.loads(json.loads(BLOB[8:HEADER_END])["__metadata__"]["sketchgen"])
TENSORS = st_load(BLOB)


def refused_in_one_line(exc: CheckpointError) -> None:
    message = str(exc)
    assert message and "\n" not in message, repr(message)


def exercise(blob: bytes) -> None:
    """Run the learner's whole checkpoint path on ``blob``; only CheckpointError may stop it."""
    try:
        ckpt = load_checkpoint(blob, expected_fingerprint=SPEC.fingerprint)
    except CheckpointError as exc:
        refused_in_one_line(exc)
        return
    steps = (lambda: restore_trainer(trainer(), ckpt), ckpt.build_generator, lambda: ckpt.sample(7, seed=0),
             lambda: ServedModel.from_checkpoint(ckpt, "inc-1").sample(5))
    for step in steps:
        try:
            step()
        except CheckpointError as exc:
            refused_in_one_line(exc)


def with_meta(meta: object, tensors: dict[str, torch.Tensor] = TENSORS, redigest: bool = True) -> bytes:
    if redigest and isinstance(meta, dict):
        try:
            meta = {**meta, DIGEST_KEY: checkpoint_digest(meta, tensors)}
        except (TypeError, ValueError):
            pass  # not canonically encodable: stored as it is, refused by the loader
    return st_save(tensors, metadata={"sketchgen": json.dumps(meta)})


def test_the_valid_blob_passes_the_whole_path():
    ckpt = load_checkpoint(BLOB, expected_fingerprint=SPEC.fingerprint)
    restored = trainer()
    restore_trainer(restored, ckpt)
    assert restored.steps == 3 and ckpt.sample(4).shape == (4, 2) and ckpt.incarnation == "inc-1"


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    exercise(data)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_after_a_plausible_header_size(tail):
    exercise(struct.pack("<Q", len(tail)) + tail)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(BLOB) - 1), st.integers(1, 255)), min_size=1, max_size=6))
def test_byte_flips_anywhere(flips):
    data = bytearray(BLOB)
    for position, mask in flips:
        data[position] ^= mask
    exercise(bytes(data))


@FUZZ
@given(st.lists(st.tuples(st.integers(8, HEADER_END - 1), st.integers(1, 255)), min_size=1, max_size=3))
def test_byte_flips_in_the_header(flips):
    data = bytearray(BLOB)
    for position, mask in flips:
        data[position] ^= mask
    exercise(bytes(data))


@FUZZ
@given(st.integers(0, len(BLOB) - 1))
def test_truncations(keep):
    exercise(BLOB[:keep])


PLAIN = (st.none() | st.booleans() | st.integers(-3, 70) | st.integers() | st.floats(allow_nan=False)
         | st.text(max_size=12) | st.sampled_from(["sketchgen.checkpoint/2", SPEC.fingerprint, "inc-1"]))
JSON = st.recursive(PLAIN, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4), max_leaves=12)
TOP_KEYS = [*sorted(META), "extra", "incarnation", "rounds"]
GENERATOR_KEYS = ["latent", "hidden", "output", "slope", "extra"]
GROUP_KEYS = [*sorted(META["optimizer_groups"][0]), "extra"]


def mutate(mapping: dict, deleted: set[str], replaced: dict[str, object]) -> dict:
    out = {k: v for k, v in mapping.items() if k not in deleted}
    out.update(replaced)
    return out


@FUZZ
@given(
    deleted=st.sets(st.sampled_from(TOP_KEYS), max_size=3),
    replaced=st.dictionaries(st.sampled_from(TOP_KEYS), JSON, max_size=3),
    generator_deleted=st.sets(st.sampled_from(GENERATOR_KEYS), max_size=2),
    generator_replaced=st.dictionaries(st.sampled_from(GENERATOR_KEYS),
                                       JSON | st.lists(st.integers(-1, 20), max_size=4), max_size=2),
    group_deleted=st.sets(st.sampled_from(GROUP_KEYS), max_size=2),
    group_replaced=st.dictionaries(st.sampled_from(GROUP_KEYS), JSON | st.lists(st.integers(-1, 12), max_size=8),
                                   max_size=2),
    redigest=st.booleans(),
)
def test_malformed_metadata(deleted, replaced, generator_deleted, generator_replaced, group_deleted,
                            group_replaced, redigest):
    meta = json.loads(json.dumps(META))
    meta.pop(DIGEST_KEY)
    meta["generator"] = mutate(meta["generator"], generator_deleted, generator_replaced)
    meta["optimizer_groups"] = [mutate(meta["optimizer_groups"][0], group_deleted, group_replaced)]
    exercise(with_meta(mutate(meta, deleted, replaced), redigest=redigest))


@FUZZ
@given(JSON)
def test_metadata_of_any_json_shape(meta):
    exercise(with_meta(meta))


@FUZZ
@given(st.text(max_size=200))
def test_metadata_that_is_any_text(text):
    exercise(st_save(TENSORS, metadata={"sketchgen": text}))


DTYPES = [torch.float32, torch.float64, torch.int64]
SHAPES = st.lists(st.integers(0, 5), max_size=3).map(tuple)


@FUZZ
@given(
    name=st.sampled_from([*sorted(TENSORS), "optimizer.99.step", "optimizer.0.max_exp_avg_sq", "ema.other", "x"]),
    action=st.sampled_from(["delete", "reshape", "retype", "fill"]),
    shape=SHAPES,
    dtype=st.sampled_from(DTYPES),
    value=st.floats(allow_nan=True, allow_infinity=True, width=32),
)
def test_malformed_tensors_under_a_valid_digest(name, action, shape, dtype, value):
    tensors = dict(TENSORS)
    current = tensors.get(name, torch.zeros(2))
    if action == "delete":
        tensors.pop(name, None)
    elif action == "reshape":
        tensors[name] = torch.zeros(shape, dtype=current.dtype)
    elif action == "retype":
        tensors[name] = current.to(dtype)
    else:
        tensors[name] = torch.full(tuple(current.shape), value, dtype=torch.float32).to(current.dtype)
    meta = {k: v for k, v in META.items() if k != DIGEST_KEY}
    exercise(with_meta(meta, tensors))


@pytest.mark.parametrize("flips", [1, 3])
def test_flips_of_a_whole_blob_in_every_region(flips):
    """Deterministic sweep: flipping bytes at evenly spread positions of each region is refused or harmless."""
    rng = np.random.default_rng(flips)
    for position in np.linspace(0, len(BLOB) - 1, 200).astype(int):
        data = bytearray(BLOB)
        for offset in range(flips):
            data[min(len(BLOB) - 1, position + offset)] ^= int(rng.integers(1, 256))
        exercise(bytes(data))
