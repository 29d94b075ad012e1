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
    DIGEST_KEY,
    MODEL_FILE,
    checkpoint_bytes,
    checkpoint_digest,
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


def stored_meta(blob: bytes) -> dict:
    """The sketchgen metadata of a checkpoint blob, as a dict."""
    return json.loads(json.loads(blob[8 : data_region_start(blob)])["__metadata__"]["sketchgen"])


def reblob(meta: dict, tensors: dict, redigest: bool = True) -> bytes:
    """A safetensors blob of ``tensors`` with ``meta``, its digest recomputed unless ``redigest`` is False."""
    if redigest:
        meta = {**meta, DIGEST_KEY: checkpoint_digest(meta, tensors)}
    return st_save(tensors, metadata={"sketchgen": json.dumps(meta)})


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
    meta = stored_meta(blob)
    meta["format"] = "sketchgen.checkpoint/999"
    with pytest.raises(CheckpointError, match="unsupported checkpoint format"):
        load_checkpoint(st_save(tensors, metadata={"sketchgen": json.dumps(meta)}))


def test_architecture_not_matching_weights_refused(trained):
    _, trainer = trained
    blob = checkpoint_bytes(trainer)
    tensors = st_load(blob)
    meta = stored_meta(blob)
    meta["generator"]["hidden"] = [16, 8]
    with pytest.raises(CheckpointError, match="digest"):  # the digest covers the metadata
        load_checkpoint(reblob(meta, tensors, redigest=False))
    with pytest.raises(CheckpointError, match="do not fit its architecture"):  # refused at load, not at build
        load_checkpoint(reblob(meta, tensors))


def test_missing_standardisation_refused(trained):
    _, trainer = trained
    blob = checkpoint_bytes(trainer)
    tensors = st_load(blob)
    del tensors["spec.std"]
    with pytest.raises(CheckpointError, match=r"spec\.std"):
        load_checkpoint(reblob(stored_meta(blob), tensors))


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


# -- the digest covers the metadata; every malformed field is one CheckpointError ------------------------------


@pytest.mark.parametrize("change", [
    ("steps", 999), ("fingerprint", "0" * 16), ("sketch_count", 1), ("created", 0.0), ("note", "added"),
])
def test_changed_metadata_is_detected_by_the_digest(trained, change):
    _, trainer = trained
    blob = checkpoint_bytes(trainer)
    meta = stored_meta(blob)
    key, value = change
    meta[key] = value
    with pytest.raises(CheckpointError, match="digest mismatch"):
        load_checkpoint(reblob(meta, st_load(blob), redigest=False))


def test_a_checkpoint_of_the_retired_format_is_refused_with_a_clear_line(trained):
    _, trainer = trained
    blob = checkpoint_bytes(trainer)
    meta = stored_meta(blob)
    meta["format"] = "sketchgen.checkpoint/1"
    with pytest.raises(CheckpointError, match="no longer read") as info:
        load_checkpoint(reblob(meta, st_load(blob)))
    assert "\n" not in str(info.value)


def without(key):
    return lambda meta: {k: v for k, v in meta.items() if k != key}


def setting(path, value):
    """A change of ``meta`` setting the nested key ``path`` (a tuple of keys/indices) to ``value``."""

    def change(meta):
        meta = json.loads(json.dumps(meta))
        node = meta
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return meta

    return change


MALFORMED = {
    "no steps": without("steps"),
    "no fingerprint": without("fingerprint"),
    "no generator": without("generator"),
    "no optimizer_groups": without("optimizer_groups"),
    "no sketch_count": without("sketch_count"),
    "steps a string": setting(("steps",), "5"),
    "steps negative": setting(("steps",), -1),
    "steps fractional": setting(("steps",), 1.5),
    "steps a bool": setting(("steps",), True),
    "fingerprint a number": setting(("fingerprint",), 12),
    "fingerprint empty": setting(("fingerprint",), ""),
    "sketch_count negative": setting(("sketch_count",), -3),
    "sketch_count huge int": setting(("sketch_count",), 10**400),
    "generator a list": setting(("generator",), [3, [16, 16], 2, 0.2]),
    "generator without latent": lambda m: setting(("generator",), {k: v for k, v in m["generator"].items()
                                                                   if k != "latent"})(m),
    "generator with an extra key": setting(("generator", "dropout"), 0.5),
    "latent a string": setting(("generator", "latent"), "3"),
    "latent a bool": setting(("generator", "latent"), True),
    "latent zero": setting(("generator", "latent"), 0),
    "latent gigantic": setting(("generator", "latent"), 10**12),
    "hidden a string": setting(("generator", "hidden"), "16,16"),
    "hidden with a string": setting(("generator", "hidden"), [16, "16"]),
    "hidden too wide": setting(("generator", "hidden"), [10**9, 16]),
    "slope out of range": setting(("generator", "slope"), 1.5),
    "slope null": setting(("generator", "slope"), None),
    "output other than the data": setting(("generator", "output"), 3),
    "optimizer_groups a dict": setting(("optimizer_groups",), {"lr": 0.01}),
    "optimizer_groups of numbers": setting(("optimizer_groups",), [1, 2]),
    "optimizer_groups empty": setting(("optimizer_groups",), []),
    "group params a string": setting(("optimizer_groups", 0, "params"), "0,1"),
    "group params too few": setting(("optimizer_groups", 0, "params"), [0, 1]),
    "group without lr": lambda m: setting(("optimizer_groups", 0), {k: v for k, v in m["optimizer_groups"][0].items()
                                                                   if k != "lr"})(m),
    "group lr negative": setting(("optimizer_groups", 0, "lr"), -0.1),
    "group betas of three": setting(("optimizer_groups", 0, "betas"), [0.9, 0.99, 0.5]),
    "group betas of strings": setting(("optimizer_groups", 0, "betas"), ["0.9", "0.999"]),
    "group flag a list": setting(("optimizer_groups", 0, "amsgrad"), [True]),
    "incarnation a number": setting(("incarnation",), 7),
    "rounds negative": setting(("rounds",), -2),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_metadata_with_a_valid_digest_is_one_checkpoint_error(trained, case):
    """Each malformation is refused at load (one line), never by another exception type later."""
    _spec, trainer = trained
    blob = checkpoint_bytes(trainer)
    tensors = st_load(blob)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(reblob(MALFORMED[case](stored_meta(blob)), tensors))
    assert str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("meta_text", ['[1, 2]', '"a string"', "3", "null", '{"format": "sketchgen.checkpoint/2"',
                                       '{"format": "sketchgen.checkpoint/2", "steps": NaN}', "[" * 100_000])
def test_metadata_that_is_not_a_json_object_is_refused(meta_text):
    blob = st_save({"spec.mean": torch.zeros(2, dtype=torch.float64)}, metadata={"sketchgen": meta_text})
    with pytest.raises(CheckpointError):
        load_checkpoint(blob)


def test_non_finite_weights_are_refused(trained):
    _, trainer = trained
    blob = checkpoint_bytes(trainer)
    tensors = st_load(blob)
    name = next(k for k in tensors if k.startswith("generator.") and k.endswith("weight"))
    tensors[name][0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(reblob(stored_meta(blob), tensors))


def test_an_unexpected_tensor_is_refused(trained):
    _, trainer = trained
    blob = checkpoint_bytes(trainer)
    tensors = {**st_load(blob), "payload": torch.zeros(3)}
    with pytest.raises(CheckpointError, match="unexpected tensor"):
        load_checkpoint(reblob(stored_meta(blob), tensors))


def test_other_optimizer_settings_are_refused_and_leave_the_trainer_untouched(trained):
    spec, trainer = trained
    blob = checkpoint_bytes(trainer)
    ckpt = load_checkpoint(reblob(setting(("optimizer_groups", 0, "amsgrad"), True)(stored_meta(blob)),
                                  st_load(blob)))
    fresh = make_trainer(spec, seed=5)
    before = params(fresh)
    with pytest.raises(CheckpointError, match="amsgrad"):
        restore_trainer(fresh, ckpt)
    assert max_param_diff(params(fresh), before) == 0 and fresh.steps == 0


def test_the_incarnation_is_recorded_and_covered_by_the_digest(trained):
    _, trainer = trained
    blob = checkpoint_bytes(trainer, incarnation="abc123")
    assert load_checkpoint(blob).incarnation == "abc123"
    assert load_checkpoint(checkpoint_bytes(trainer)).incarnation is None
    meta = stored_meta(blob)
    meta["incarnation"] = "other"
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(reblob(meta, st_load(blob), redigest=False))


def test_non_finite_extra_fields_are_stored_as_null(trained):
    _, trainer = trained
    ckpt = load_checkpoint(checkpoint_bytes(trainer, extra={"training": {"loss": float("nan"), "floor": 1.0}}))
    assert ckpt.meta["training"] == {"loss": None, "floor": 1.0}


def test_samples_in_chunks_equal_one_pass(trained):
    _, trainer = trained
    ckpt = load_checkpoint(checkpoint_bytes(trainer))
    n = 20_000  # more than one chunk
    one_pass = ckpt.build_generator().sample(n, generator=torch.Generator().manual_seed(2)).numpy()
    np.testing.assert_allclose(ckpt.sample(n, seed=2), ckpt.unstandardize(one_pass.astype(np.float64)),
                               rtol=1e-6, atol=1e-6)
