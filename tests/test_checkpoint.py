"""Checkpoints: exact round trips, exact resumption (Adam state), and refusal of bad files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from learner.checkpoint import (
    CHECKPOINT_FORMAT,
    MODEL_FILE,
    checkpoint_bytes,
    load_checkpoint,
    load_model_dir,
    restore_trainer,
    save_model_dir,
    tensor_digest,
)
from learner.generator import GeneratorConfig
from learner.trainer import TrainConfig, Trainer
from sketch_store.errors import CheckpointError
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec

GCONF = GeneratorConfig(latent=3, hidden=(16, 16), output=2)


def make_spec(seed: int = 0, mean: float = 0.0, std: float = 1.0) -> SketchSpec:
    return SketchSpec.create(
        d=2, m=64, law="gaussian", sigma=1.0, mean=np.full(2, mean), std=np.full(2, std), seed=seed
    )


def make_target(spec: SketchSpec, seed: int = 0) -> Sketch:
    x = spec.unstandardize(np.random.default_rng(seed).normal(loc=[1.0, -0.5], scale=0.5, size=(2000, 2)))
    return Sketch.from_data(spec, x)


def make_trainer(spec: SketchSpec, seed: int = 0, lr: float = 1e-2) -> Trainer:
    return Trainer(spec, GCONF, TrainConfig(batch=128, lr=lr, seed=seed))


def params(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.generator.parameters()]


def max_param_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def trained():
    spec = make_spec()
    trainer = make_trainer(spec)
    trainer.set_target(make_target(spec))
    trainer.train(steps=5)
    return spec, trainer


def data_region_start(blob: bytes) -> int:
    (size,) = struct.unpack("<Q", blob[:8])
    return 8 + size


# -- round trips -------------------------------------------------------------------


def test_checkpoint_round_trip_metadata(trained):
    spec, trainer = trained
    ckpt = load_checkpoint(checkpoint_bytes(trainer, extra={"note": "hello"}), expected_fingerprint=spec.fingerprint)
    assert ckpt.meta["format"] == CHECKPOINT_FORMAT
    assert ckpt.fingerprint == spec.fingerprint
    assert ckpt.steps == 5
    assert ckpt.sketch_count == 2000
    assert ckpt.generator_config == GCONF
    assert ckpt.meta["note"] == "hello"
    assert np.array_equal(ckpt.tensors["spec.mean"].numpy(), spec.mean)
    assert np.array_equal(ckpt.tensors["spec.std"].numpy(), spec.std)
    assert any(k.startswith("optimizer.") and k.endswith("exp_avg_sq") for k in ckpt.tensors)


def test_generator_outputs_identical_after_reload(trained):
    _, trainer = trained
    gen = load_checkpoint(checkpoint_bytes(trainer)).build_generator()
    u = torch.randn(50, GCONF.latent, generator=torch.Generator().manual_seed(0))
    trainer.generator.eval()
    with torch.no_grad():
        assert torch.equal(gen(u), trainer.generator(u))
    for (name_a, a), (name_b, b) in zip(gen.state_dict().items(), trainer.generator.state_dict().items(), strict=True):
        assert name_a == name_b and torch.equal(a, b)


def test_checkpoint_sample_equals_trainer_sample(trained):
    _, trainer = trained
    ckpt = load_checkpoint(checkpoint_bytes(trainer))
    assert np.array_equal(ckpt.sample(40, seed=3), trainer.sample(40, seed=3))
    assert not np.array_equal(ckpt.sample(40, seed=3), ckpt.sample(40, seed=4))


def test_model_dir_round_trip(trained, tmp_path):
    spec, trainer = trained
    path = save_model_dir(tmp_path / "model", trainer, extra={"training": {"steps": 5}})
    assert path == tmp_path / "model" / MODEL_FILE and path.exists()
    assert not list((tmp_path / "model").glob("*.tmp"))
    from_dir = load_model_dir(tmp_path / "model", expected_fingerprint=spec.fingerprint)
    from_file = load_model_dir(path)
    assert from_dir.meta["training"] == {"steps": 5}
    assert np.array_equal(from_dir.sample(10, seed=0), from_file.sample(10, seed=0))
    assert np.array_equal(from_dir.sample(10, seed=0), trainer.sample(10, seed=0))


def test_load_model_dir_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no model found"):
        load_model_dir(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model found"):
        load_model_dir(tmp_path / "empty")


def test_tensor_digest_detects_changes():
    t = {"a": torch.arange(4, dtype=torch.float32), "b": torch.ones(2, 2)}
    d0 = tensor_digest(t)
    assert d0 == tensor_digest({"b": torch.ones(2, 2), "a": torch.arange(4, dtype=torch.float32)})
    assert d0 != tensor_digest({"a": torch.arange(4, dtype=torch.float64), "b": torch.ones(2, 2)})
    assert d0 != tensor_digest({"a": torch.arange(4, dtype=torch.float32), "b": torch.ones(4)})
    assert d0 != tensor_digest({"a": torch.arange(4, dtype=torch.float32), "c": torch.ones(2, 2)})


# -- exact resumption ----------------------------------------------------------------


def test_resume_reproduces_uninterrupted_training():
    spec = make_spec()
    target = make_target(spec)
    a = make_trainer(spec, seed=0)
    a.set_target(target)
    a.train(steps=10)
    blob = checkpoint_bytes(a)
    rng_state = a.rng.get_state()
    a.train(steps=10)
    expected = params(a)

    b = make_trainer(spec, seed=123)  # different initial weights: everything must come from the checkpoint
    assert max_param_diff(params(b), expected) > 1e-3
    ckpt = load_checkpoint(blob, expected_fingerprint=spec.fingerprint)
    restore_trainer(b, ckpt)
    assert b.steps == 10
    b.set_target(target)
    b.rng.set_state(rng_state)
    b.train(steps=10)
    assert b.steps == 20
    assert max_param_diff(params(b), expected) < 1e-6

    # Control: the same weights and latents but a fresh Adam state give a visibly different result,
    # so the agreement above really comes from the restored optimiser state.
    c = make_trainer(spec, seed=123)
    c.generator.load_state_dict(ckpt.generator_state())
    c.set_target(target)
    c.rng.set_state(rng_state)
    c.train(steps=10)
    assert max_param_diff(params(c), expected) > 1e-4


def test_restore_into_other_spec_refused(trained):
    _, trainer = trained
    ckpt = load_checkpoint(checkpoint_bytes(trainer))
    with pytest.raises(CheckpointError, match="trained for spec"):
        restore_trainer(make_trainer(make_spec(seed=1)), ckpt)


def test_restore_into_other_architecture_refused(trained):
    spec, trainer = trained
    ckpt = load_checkpoint(checkpoint_bytes(trainer))
    other = Trainer(spec, GeneratorConfig(latent=3, hidden=(8,), output=2), TrainConfig(batch=16, seed=0))
    with pytest.raises(CheckpointError, match="architecture"):
        restore_trainer(other, ckpt)


# -- refusing bad files --------------------------------------------------------------


def test_flipped_byte_in_tensor_data_refused(trained):
    _, trainer = trained
    blob = bytearray(checkpoint_bytes(trainer))
    start = data_region_start(bytes(blob))
    for pos in (start, start + (len(blob) - start) // 2, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[pos] ^= 0x01
        with pytest.raises(CheckpointError, match="digest"):
            load_checkpoint(bytes(tampered))


@pytest.mark.parametrize("keep", [0, 5, 8, 100, -1])
def test_truncated_checkpoint_refused(trained, keep):
    _, trainer = trained
    blob = checkpoint_bytes(trainer)
    cut = blob[:keep] if keep >= 0 else blob[: len(blob) - 16]
    with pytest.raises(CheckpointError):
        load_checkpoint(cut)


def test_expected_fingerprint_mismatch_refused(trained):
    _, trainer = trained
    blob = checkpoint_bytes(trainer)
    with pytest.raises(CheckpointError, match="trained for spec"):
        load_checkpoint(blob, expected_fingerprint=make_spec(seed=7).fingerprint)


def test_plain_safetensors_refused(tmp_path):
    blob = st_save({"weight": torch.ones(3, 3)})
    with pytest.raises(CheckpointError, match="not a sketchgen checkpoint"):
        load_checkpoint(blob)
    blob = st_save({"weight": torch.ones(3, 3)}, metadata={"other": "x"})
    with pytest.raises(CheckpointError, match="not a sketchgen checkpoint"):
        load_checkpoint(blob)
    (tmp_path / MODEL_FILE).write_bytes(blob)
    with pytest.raises(CheckpointError):
        load_model_dir(tmp_path)


def test_other_format_refused(trained):
    _, trainer = trained
    blob = checkpoint_bytes(trainer)
    tensors = st_load(blob)
    meta = json.loads(json.loads(blob[8 : data_region_start(blob)])["__metadata__"]["sketchgen"])
    meta["format"] = "sketchgen.checkpoint/999"
    with pytest.raises(CheckpointError, match="unsupported checkpoint format"):
        load_checkpoint(st_save(tensors, metadata={"sketchgen": json.dumps(meta)}))


def test_architecture_not_matching_weights_refused(trained):
    _, trainer = trained
    blob = checkpoint_bytes(trainer)
    tensors = st_load(blob)
    meta = json.loads(json.loads(blob[8 : data_region_start(blob)])["__metadata__"]["sketchgen"])
    meta["generator"]["hidden"] = [16, 8]
    ckpt = load_checkpoint(st_save(tensors, metadata={"sketchgen": json.dumps(meta)}))  # digest still valid
    with pytest.raises(CheckpointError, match="do not fit"):
        ckpt.build_generator()


def test_missing_standardisation_refused(trained):
    _, trainer = trained
    blob = checkpoint_bytes(trainer)
    tensors = st_load(blob)
    del tensors["spec.std"]
    meta = json.loads(json.loads(blob[8 : data_region_start(blob)])["__metadata__"]["sketchgen"])
    meta["tensor_sha256"] = tensor_digest(tensors)
    with pytest.raises(CheckpointError, match=r"spec\.std"):
        load_checkpoint(st_save(tensors, metadata={"sketchgen": json.dumps(meta)}))


def test_garbage_refused():
    with pytest.raises(CheckpointError):
        load_checkpoint(b"\xff" * 64)
    with pytest.raises(CheckpointError):
        load_checkpoint(struct.pack("<Q", 10) + b"not json!!" + b"\x00" * 8)


# -- original units --------------------------------------------------------------------


def test_samples_are_in_original_units():
    spec = make_spec(mean=100.0, std=5.0)
    trainer = make_trainer(spec, lr=1e-2)
    x = np.random.default_rng(1).normal(loc=100.0, scale=5.0, size=(3000, 2))
    trainer.set_target(Sketch.from_data(spec, x))
    trainer.train(steps=30)
    ckpt = load_checkpoint(checkpoint_bytes(trainer))
    samples = ckpt.sample(2000, seed=0)
    assert samples.shape == (2000, 2) and samples.dtype == np.float64
    assert np.all(np.abs(samples.mean(axis=0) - 100.0) < 10.0)
    # exact arithmetic: x = G(u) · std + mean
    raw = ckpt.build_generator().sample(2000, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float64)
    assert np.allclose(samples, raw * 5.0 + 100.0, rtol=0, atol=1e-12)
    assert np.allclose(ckpt.unstandardize(np.zeros((1, 2))), [[100.0, 100.0]])
    assert np.allclose(ckpt.unstandardize(np.ones((1, 2))), [[105.0, 105.0]])


def test_the_weight_average_round_trips_and_is_what_a_checkpoint_samples():
    spec = make_spec()
    config = TrainConfig(batch=128, lr=1e-2, seed=0, ema_decay=0.95)
    trainer = Trainer(spec, GCONF, config)
    trainer.set_target(make_target(spec))
    trainer.train(steps=30)
    ckpt = load_checkpoint(checkpoint_bytes(trainer))
    assert np.allclose(ckpt.sample(50, seed=4), trainer.sample(50, seed=4), atol=1e-6)  # the average, not the raw
    resumed = Trainer(spec, GCONF, config)
    restore_trainer(resumed, ckpt)
    resumed.set_target(make_target(spec))
    for a, b in zip(resumed.ema.state_dict().values(), trainer.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    resumed.rng.set_state(trainer.rng.get_state())  # same latents from here on
    trainer.train(steps=5)
    resumed.train(steps=5)
    for a, b in zip(resumed.ema.module.parameters(), trainer.ema.module.parameters(), strict=True):
        torch.testing.assert_close(a, b)  # averaging continues where it stopped


def test_a_checkpoint_without_an_average_serves_its_raw_weights():
    spec = make_spec()
    trainer = make_trainer(spec)
    trainer.set_target(make_target(spec))
    trainer.train(steps=3)
    ckpt = load_checkpoint(checkpoint_bytes(trainer))
    assert ckpt.ema_state() == {}
    assert np.allclose(ckpt.sample(20, seed=1), trainer.sample(20, seed=1), atol=1e-6)
