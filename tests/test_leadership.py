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
from sketch_store.leadership import CheckpointStore, Lease, LeaseLostError, StaleIncarnationError
from sketch_store.redis_connect import connect
from sketch_store.redis_keys import StreamKeys
from sketch_store.redis_store import SketchStore, StreamNotFoundError
from sketch_store.spec import SketchSpec


@pytest.fixture
def client(redis_server):
    c = connect(redis_server.url)
    yield c
    c.close()


def stream() -> str:
    return f"lease-{uuid.uuid4().hex[:8]}"


def created(client, spec: SketchSpec | None = None) -> tuple[str, str]:
    """A new stream in Redis: (name, its incarnation)."""
    name = stream()
    store = SketchStore(client)
    store.create_stream((spec or SketchSpec.create(d=2, m=8, seed=0)).with_name(name))
    return name, store.incarnation(name)


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


def test_renewed_at_is_the_start_of_the_last_successful_take_or_renewal(client):
    """What the learner's round measures its renewals from (work before a round counts against the TTL)."""
    name = stream()
    lease, other = Lease(client, name, "a", ttl=5), Lease(client, name, "b", ttl=5)
    assert lease.renewed_at == float("-inf")
    before = time.monotonic()
    assert lease.acquire()
    taken = lease.renewed_at
    assert before <= taken <= time.monotonic()
    time.sleep(0.05)
    assert lease.renew() and lease.renewed_at > taken
    assert not other.acquire() and other.renewed_at == float("-inf")
    assert lease.release() and lease.renewed_at == float("-inf")


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
    spec = SketchSpec.create(d=2, m=8, seed=0)
    name, inc = created(client, spec)
    trainer = Trainer(spec, GeneratorConfig(latent=2, hidden=(4,), output=2))
    blob = checkpoint_bytes(trainer)
    store = CheckpointStore(client, name)
    assert store.load() is None
    leader, standby = Lease(client, name, "a", ttl=0.5), Lease(client, name, "b", ttl=0.5)
    assert leader.acquire()
    store.save(leader, blob, spec.fingerprint, steps=7, sketch_count=123, incarnation=inc)
    got = store.load()
    assert got is not None and got.model == blob and got.steps == 7 and got.sketch_count == 123
    assert got.fingerprint == spec.fingerprint and got.holder == "a" and got.age_seconds < 5
    assert got.incarnation == inc and got.record_id
    assert load_checkpoint(got.model, expected_fingerprint=spec.fingerprint).steps == 0
    with pytest.raises(LeaseLostError):
        store.save(standby, b"not a model", spec.fingerprint, steps=1, sketch_count=1, incarnation=inc)
    time.sleep(0.7)
    assert standby.acquire()
    with pytest.raises(LeaseLostError):  # the deposed leader cannot overwrite its successor's model
        store.save(leader, b"stale", spec.fingerprint, steps=999, sketch_count=1, incarnation=inc)
    assert store.load().steps == 7


def test_a_corrupted_stored_model_is_refused(client):
    spec = SketchSpec.create(d=2, m=8, seed=0)
    name, inc = created(client, spec)
    blob = bytearray(checkpoint_bytes(Trainer(spec, GeneratorConfig(latent=2, hidden=(4,), output=2))))
    blob[-3] ^= 0xFF  # flip a byte inside the tensors
    lease = Lease(client, name, "a", ttl=5)
    assert lease.acquire()
    store = CheckpointStore(client, name)
    store.save(lease, bytes(blob), spec.fingerprint, steps=1, sketch_count=1, incarnation=inc)
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
    inc = SketchStore(client).incarnation(name)
    CheckpointStore(client, name).save(lease, checkpoint_bytes(trainer), spec.fingerprint, steps=0, sketch_count=0,
                                       incarnation=inc)
    assert main(args) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (50, 2) and abs(samples[:, 0].mean() - 100.0) < 20  # original units
    # a checkpoint of another spec (the stream was recreated) is refused with one line
    other = SketchSpec.create(d=2, m=8, seed=1)
    blob = checkpoint_bytes(Trainer(other, GeneratorConfig(latent=2, hidden=(4,), output=2)))
    CheckpointStore(client, name).save(lease, blob, other.fingerprint, steps=0, sketch_count=0, incarnation=inc)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained for spec" in err[0]
    # a checkpoint of an earlier incarnation of the stream (same spec, recreated) is refused too
    CheckpointStore(client, name).save(lease, checkpoint_bytes(trainer), spec.fingerprint, steps=0, sketch_count=0,
                                       incarnation=inc)
    client.hset(CheckpointStore(client, name).keys.checkpoint, "incarnation", "an-earlier-one")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recreated" in err[0], err
    assert main(["sample", "no-such-stream", "-n", "5", "--out", str(tmp_path / "x.npy"), "--redis",
                 redis_server.url]) == 2


def test_saved_at_reads_the_time_without_the_model(client):
    name, inc = created(client)
    store = CheckpointStore(client, name)
    assert store.saved_at() is None
    lease = Lease(client, name, "a", ttl=5)
    assert lease.acquire()
    store.save(lease, b"model", "fp", steps=1, sketch_count=1, incarnation=inc)
    assert store.saved_at() == store.load().saved


# -- incarnations: a trainer of a replaced stream never writes into its successor ---------------------------


def test_a_write_for_an_earlier_incarnation_of_the_stream_is_refused(client):
    spec = SketchSpec.create(d=2, m=8, seed=0)
    name, first = created(client, spec)
    sketches = SketchStore(client)
    store = CheckpointStore(client, name)
    lease = Lease(client, name, "a", ttl=30)
    assert lease.acquire()
    store.save(lease, b"model-1", spec.fingerprint, steps=5, sketch_count=1, incarnation=first)
    sketches.create_stream(spec.with_name(name), replace=True)  # the same spec, a new incarnation
    second = sketches.incarnation(name)
    assert second != first and store.load() is None
    assert lease.acquire()  # even holding the lease again (the replace deleted it) ...
    with pytest.raises(StaleIncarnationError, match="recreated"):  # ... the old trainer cannot write
        store.save(lease, b"model-1b", spec.fingerprint, steps=6, sketch_count=1, incarnation=first)
    assert store.load() is None
    store.save(lease, b"model-2", spec.fingerprint, steps=1, sketch_count=1, incarnation=second)
    got = store.load()
    assert got.model == b"model-2" and got.incarnation == second


def test_a_write_for_a_deleted_stream_is_refused(client):
    name, inc = created(client)
    SketchStore(client).delete_stream(name)
    lease = Lease(client, name, "a", ttl=30)
    assert lease.acquire()
    with pytest.raises(StreamNotFoundError):
        CheckpointStore(client, name).save(lease, b"m", "fp", steps=1, sketch_count=1, incarnation=inc)
    assert CheckpointStore(client, name).load() is None


def test_a_stream_without_a_recorded_incarnation_counts_as_the_empty_one(client):
    name, inc = created(client)
    client.hdel(StreamKeys(name).meta, "incarnation")
    lease = Lease(client, name, "a", ttl=30)
    assert lease.acquire()
    store = CheckpointStore(client, name)
    with pytest.raises(StaleIncarnationError):
        store.save(lease, b"m", "fp", steps=1, sketch_count=1, incarnation=inc)
    store.save(lease, b"m", "fp", steps=1, sketch_count=1, incarnation="")
    assert store.load().incarnation == ""


def test_a_save_replaces_the_whole_record(client):
    name, inc = created(client)
    client.hset(StreamKeys(name).checkpoint, mapping={"model": b"x", "junk": b"left over"})
    lease = Lease(client, name, "a", ttl=30)
    assert lease.acquire()
    CheckpointStore(client, name).save(lease, b"m", "fp", steps=1, sketch_count=1, incarnation=inc)
    assert b"junk" not in client.hgetall(StreamKeys(name).checkpoint)


# -- malformed records: one CheckpointError, never another exception ----------------------------------------

GOOD_RECORD = {"model": b"blob", "fingerprint": b"fp", "steps": b"3", "sketch_count": b"10.0", "saved": b"1700000000.5",
               "holder": b"a", "incarnation": b"inc"}
BAD_RECORDS = {
    "no model": {"model": None},
    "empty model": {"model": b""},
    "no fingerprint": {"fingerprint": None},
    "fingerprint not UTF-8": {"fingerprint": b"\xff\xfe"},
    "no steps": {"steps": None},
    "steps not a number": {"steps": b"many"},
    "steps fractional": {"steps": b"1.5"},
    "steps negative": {"steps": b"-4"},
    "steps huge": {"steps": b"9" * 40},
    "sketch_count NaN": {"sketch_count": b"nan"},
    "sketch_count infinite": {"sketch_count": b"inf"},
    "sketch_count negative": {"sketch_count": b"-1"},
    "saved NaN": {"saved": b"nan"},
    "saved missing": {"saved": None},
    "saved text": {"saved": b"yesterday"},
    "holder not UTF-8": {"holder": b"\x80"},
    "incarnation not UTF-8": {"incarnation": b"\xc3\x28"},
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_a_malformed_checkpoint_record_is_one_checkpoint_error(client, case):
    name, _ = created(client)
    record = {k: v for k, v in {**GOOD_RECORD, **BAD_RECORDS[case]}.items() if v is not None}
    client.hset(StreamKeys(name).checkpoint, mapping=record)
    with pytest.raises(CheckpointError) as info:
        CheckpointStore(client, name).load()
    assert str(info.value) and "\n" not in str(info.value)


def test_a_good_record_written_by_hand_loads(client):
    name, _ = created(client)
    client.hset(StreamKeys(name).checkpoint, mapping=GOOD_RECORD)
    got = CheckpointStore(client, name).load()
    assert (got.model, got.steps, got.sketch_count, got.incarnation) == (b"blob", 3, 10.0, "inc")
    client.hdel(StreamKeys(name).checkpoint, "incarnation", "holder")
    assert CheckpointStore(client, name).load().incarnation == ""


@pytest.mark.parametrize("saved", [b"nan", b"inf", b"-5", b"soon"])
def test_a_malformed_saved_time_is_one_checkpoint_error(client, saved):
    name, _ = created(client)
    client.hset(StreamKeys(name).checkpoint, mapping={**GOOD_RECORD, "saved": saved})
    with pytest.raises(CheckpointError):
        CheckpointStore(client, name).saved_at()


def test_cli_samples_a_stream_named_like_a_directory(client, redis_server, tmp_path, monkeypatch):
    """`sample NAME` reads the stream when NAME is also a directory here that holds no model."""
    from sketch_store.redis_store import SketchStore
    from sketchgen.cli import main

    name = stream()
    (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path)
    spec = SketchSpec.create(d=2, m=8, seed=0, name=name)
    SketchStore(client).create_stream(spec)
    lease = Lease(client, name, "a", ttl=5)
    assert lease.acquire()
    trainer = Trainer(spec, GeneratorConfig(latent=2, hidden=(4,), output=2))
    CheckpointStore(client, name).save(lease, checkpoint_bytes(trainer), spec.fingerprint, steps=0, sketch_count=0,
                                       incarnation=SketchStore(client).incarnation(name))
    assert main(["sample", name, "-n", "20", "--out", "s.npy", "--redis", redis_server.url]) == 0
    assert np.load(tmp_path / "s.npy").shape == (20, 2)
