"""The learner lease and lease-fenced checkpoints, against a real throwaway Redis."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from learner.checkpoint import checkpoint_bytes, load_checkpoint
from learner.generator import GeneratorConfig
from learner.trainer import Trainer
from sketch_store.errors import CheckpointError, SketchgenError
from sketch_store.leadership import CheckpointStore, Lease, LeaseLostError
from sketch_store.redis_connect import connect
from sketch_store.spec import SketchSpec


@pytest.fixture
def client(redis_server):
    c = connect(redis_server.url)
    yield c
    c.close()


def stream() -> str:
    return f"lease-{uuid.uuid4().hex[:8]}"


def test_one_holder_at_a_time_and_takeover_after_expiry(client):
    name = stream()
    leader = Lease(client, name, "a", ttl=0.5)
    standby = Lease(client, name, "b", ttl=0.5)
    assert leader.acquire()
    assert not standby.acquire()
    assert leader.renew() and leader.current_holder() == "a"
    time.sleep(0.7)  # the leader dies: no renewal
    assert standby.acquire()
    assert standby.current_holder() == "b"
    # the old leader wakes up: it can neither renew, nor release, nor retake the lease
    assert not leader.renew()
    assert not leader.release()
    assert not leader.acquire()
    assert standby.current_holder() == "b"


def test_release_hands_over_at_once(client):
    name = stream()
    leader, standby = Lease(client, name, "a", ttl=30), Lease(client, name, "b", ttl=30)
    assert leader.acquire() and not standby.acquire()
    assert leader.release()
    assert standby.acquire()


def test_bad_ttl():
    with pytest.raises(SketchgenError):
        Lease(None, "s", "a", ttl=0)  # type: ignore[arg-type]


def test_checkpoints_are_written_only_by_the_lease_holder(client):
    name = stream()
    spec = SketchSpec.create(d=2, m=8, seed=0)
    trainer = Trainer(spec, GeneratorConfig(latent=2, hidden=(4,), output=2))
    blob = checkpoint_bytes(trainer)
    store = CheckpointStore(client, name)
    assert store.load() is None
    leader, standby = Lease(client, name, "a", ttl=0.5), Lease(client, name, "b", ttl=0.5)
    assert leader.acquire()
    store.save(leader, blob, spec.fingerprint, steps=7, sketch_count=123)
    got = store.load()
    assert got is not None and got.model == blob and got.steps == 7 and got.sketch_count == 123
    assert got.fingerprint == spec.fingerprint and got.holder == "a" and got.age_seconds < 5
    assert load_checkpoint(got.model, expected_fingerprint=spec.fingerprint).steps == 0
    with pytest.raises(LeaseLostError):
        store.save(standby, b"not a model", spec.fingerprint, steps=1, sketch_count=1)
    time.sleep(0.7)
    assert standby.acquire()
    with pytest.raises(LeaseLostError):  # the deposed leader cannot overwrite its successor's model
        store.save(leader, b"stale", spec.fingerprint, steps=999, sketch_count=1)
    assert store.load().steps == 7


def test_a_corrupted_stored_model_is_refused(client):
    name = stream()
    spec = SketchSpec.create(d=2, m=8, seed=0)
    blob = bytearray(checkpoint_bytes(Trainer(spec, GeneratorConfig(latent=2, hidden=(4,), output=2))))
    blob[-3] ^= 0xFF  # flip a byte inside the tensors
    lease = Lease(client, name, "a", ttl=5)
    assert lease.acquire()
    store = CheckpointStore(client, name)
    store.save(lease, bytes(blob), spec.fingerprint, steps=1, sketch_count=1)
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(store.load().model, expected_fingerprint=spec.fingerprint)
    assert np.isfinite(store.load().saved)


def test_cli_samples_a_streams_latest_checkpoint(client, redis_server, tmp_path, capsys):
    from sketch_store.redis_store import SketchStore
    from sketchgen.cli import main

    name = stream()
    spec = SketchSpec.create(d=2, m=8, seed=0, mean=np.array([100.0, -5.0]), std=np.array([2.0, 3.0]), name=name)
    SketchStore(client).create_stream(spec)
    args = ["sample", name, "-n", "50", "--out", str(tmp_path / "s.npy"), "--redis", redis_server.url]
    assert main(args) == 2
    assert "no model checkpoint yet" in capsys.readouterr().err
    lease = Lease(client, name, "a", ttl=5)
    assert lease.acquire()
    trainer = Trainer(spec, GeneratorConfig(latent=2, hidden=(4,), output=2))
    CheckpointStore(client, name).save(lease, checkpoint_bytes(trainer), spec.fingerprint, steps=0, sketch_count=0)
    assert main(args) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (50, 2) and abs(samples[:, 0].mean() - 100.0) < 20  # original units
    # a checkpoint of another spec (the stream was recreated) is refused with one line
    other = SketchSpec.create(d=2, m=8, seed=1)
    blob = checkpoint_bytes(Trainer(other, GeneratorConfig(latent=2, hidden=(4,), output=2)))
    CheckpointStore(client, name).save(lease, blob, other.fingerprint, steps=0, sketch_count=0)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained for spec" in err[0]
    assert main(["sample", "no-such-stream", "-n", "5", "--out", str(tmp_path / "x.npy"), "--redis",
                 redis_server.url]) == 2


def test_saved_at_reads_the_time_without_the_model(client):
    name = stream()
    store = CheckpointStore(client, name)
    assert store.saved_at() is None
    lease = Lease(client, name, "a", ttl=5)
    assert lease.acquire()
    store.save(lease, b"model", "fp", steps=1, sketch_count=1)
    assert store.saved_at() == store.load().saved
