"""Drift per field (learner/drift_fields.py): calibration under no change, ranking of a moved field, a moved
category of a typed stream, and the learner's /status and /metrics carrying the scores.

The math tests use synthetic standard-normal windows sketched with a spec drawn from a pilot exactly as the
product does; the wiring test runs a real LearnerService loop on the session's Redis.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from learner.drift import drift_score
from learner.drift_fields import FieldScore, field_scores
from learner.generator import GeneratorConfig
from sketch_store.errors import SpecMismatchError
from sketch_store.pilot import spec_from_pilot, typed_spec_from_pilot
from sketch_store.redis_connect import connect
from sketch_store.redis_store import BucketDelta, SketchStore
from sketch_store.schema import Field, Schema
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec
from tests.processes import get, metrics_text, wait_for
from tests.test_learner_checkpoints import running

N_REF, N_RECENT = 5000, 1000


def numeric_spec(d: int, m: int = 1000) -> SketchSpec:
    return spec_from_pilot(np.random.default_rng(d).normal(size=(3000, d)), m=m, seed=d)


def test_scores_are_about_one_without_change():
    d, draws = 5, 40
    spec = numeric_spec(d, m=500)
    rng = np.random.default_rng(1)
    by_field: dict[str, list[float]] = {}
    for _ in range(draws):
        reference = Sketch.from_data(spec, rng.normal(size=(N_REF, d)))
        recent = Sketch.from_data(spec, rng.normal(size=(N_RECENT, d)))
        for f in field_scores(recent, reference, spec):
            by_field.setdefault(f.name, []).append(f.score)
    assert sorted(by_field) == [f"x{j}" for j in range(d)]
    means = {name: float(np.mean(s)) for name, s in by_field.items()}
    assert all(0.7 <= v <= 1.4 for v in means.values()), means


@pytest.mark.parametrize("d", [5, 10])
def test_a_mean_shift_of_one_field_ranks_it_first(d):
    trials, shift = 50, 0.5
    spec = numeric_spec(d)
    rng = np.random.default_rng(100 + d)
    hits, stream = 0, []
    for t in range(trials):
        field = t % d
        reference = Sketch.from_data(spec, rng.normal(size=(N_REF, d)))
        x = rng.normal(size=(N_RECENT, d))
        x[:, field] += shift
        recent = Sketch.from_data(spec, x)
        stream.append(drift_score(recent, reference))
        hits += field_scores(recent, reference, spec)[0].name == f"x{field}"
    assert np.mean(stream) > 5, "the shift must make the stream's score fire"
    assert hits / trials >= 0.9, f"{hits}/{trials} trials ranked the shifted field first"


COLORS = ("red", "green", "blue", "black", "white")
SCHEMA = Schema((Field("size", "float"), Field("color", "category", COLORS), Field("flag", "bool", nullable=True)))


def typed_records(rng: np.random.Generator, n: int, blue_extra: float = 0.0) -> list[dict[str, object]]:
    """``n`` records: size ~ N(0, 1), color uniform (``blue_extra`` of them moved to blue), flag a coin or null."""
    colors = rng.choice(COLORS, size=n)
    colors[rng.random(n) < blue_extra] = "blue"
    flags = rng.choice([True, False, None], size=n)
    return [{"size": float(s), "color": str(c), "flag": f}
            for s, c, f in zip(rng.normal(size=n), colors, flags, strict=True)]


def typed_sketch(spec: SketchSpec, records: list[dict[str, object]]) -> Sketch:
    return Sketch.from_data(spec, spec.encoder.encode_many(records))


def test_a_category_share_change_names_the_field_and_the_category():
    rng = np.random.default_rng(7)
    spec = typed_spec_from_pilot(typed_records(rng, 3000), SCHEMA, m=1000, seed=0)
    reference = typed_sketch(spec, typed_records(rng, N_REF))
    recent = typed_sketch(spec, typed_records(rng, N_RECENT, blue_extra=0.2))
    scores = field_scores(recent, reference, spec)
    assert scores[0].name == "color", scores
    assert sorted(f.name for f in scores) == ["color", "flag", "size"]
    top = scores[0]
    assert 1 <= len(top.categories) <= 3 and top.categories[0][0] == "blue", top.categories
    assert top.score > 5 and top.categories[0][1] > 5
    assert all(not f.categories for f in scores[1:])  # only a category field reports categories
    assert top.to_dict()["categories"][0]["category"] == "blue"


def test_too_few_records_give_no_scores_and_another_spec_is_refused():
    spec = numeric_spec(2, m=64)
    rng = np.random.default_rng(0)
    reference = Sketch.from_data(spec, rng.normal(size=(500, 2)))
    assert field_scores(Sketch.from_data(spec, rng.normal(size=(5, 2))), reference, spec) == []
    other = SketchSpec.create(d=2, m=64, law="gaussian", seed=9)
    with pytest.raises(SpecMismatchError):
        field_scores(Sketch.from_data(other, rng.normal(size=(500, 2))), reference, spec)
    with pytest.raises(SpecMismatchError):
        foreign = Sketch.from_data(other, rng.normal(size=(500, 2)))
        field_scores(foreign, Sketch.from_data(other, rng.normal(size=(500, 2))), spec)
    assert FieldScore("x0", 2.0).to_dict() == {"field": "x0", "score": 2.0, "categories": []}


@pytest.mark.slow
def test_a_learner_reports_the_moved_field_in_status_and_metrics(redis_server):
    """A real LearnerService loop on Redis: ten minutes of reference records and a last minute whose x1 moved."""
    store = SketchStore(connect(redis_server.url))
    name = f"fields-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(3)
    spec = spec_from_pilot(rng.normal(size=(3000, 3)), m=300, seed=0, name=name)
    store.create_stream(spec)
    now = time.time()
    old, recent = rng.normal(size=(4000, 3)), rng.normal(size=(1000, 3))
    recent[:, 1] += 0.6
    claim = store.claim(name, "t", 0)
    deltas = [(Sketch.from_data(spec, rows), now - age) for rows, age in ((old, 300), (recent, 20))]
    buckets = [BucketDelta("fine", int(t // 10 * 10), s.total, s.count) for s, t in deltas]
    both = deltas[0][0].merge(deltas[1][0])
    store.flush(name, claim, 0, 5000, both.total, both.count, buckets, now=now, bounds=both.bounds)
    with running(redis_server.url, name, generator=GeneratorConfig(latent=4, hidden=(32, 32), output=3)) as (
            _, port, _):
        wait_for(lambda: get(port, "/status")[1].get("drift_fields"), 60, "per-field drift scores in /status")
        status = get(port, "/status")[1]
        fields = status["drift_fields"]
        assert fields[0]["field"] == "x1" and sorted(f["field"] for f in fields) == ["x0", "x1", "x2"]
        assert fields[0]["score"] > 5 and fields[0]["categories"] == [] and status["drift_score"] > 5
        assert [f["field"] for f in get(port, "/history")[1]["drift_fields"]] == [f["field"] for f in fields]
        text = metrics_text(port)
        for field in ("x0", "x1", "x2"):
            assert f'sketchgen_drift_field_score{{field="{field}",stream="{name}",window="60s_vs_600s"}}' in text
        # a fresh learner alarms on its prior threshold (≈ 4.6 at one false alarm a day), counted once
        alarm = status["drift_alarm"]
        assert not alarm["calibrated"] and alarm["calibration_windows"] <= 1 and alarm["false_alarms_per_day"] == 1
        assert 4 < status["drift_threshold"] == alarm["threshold"] < status["drift_score"]
        assert alarm["alarm"] and alarm["by"][0] == "threshold"  # the CUSUM may fire too, on so large a score
        labels = f'stream="{name}",window="60s_vs_600s"'
        assert f'sketchgen_drift_alarms_total{{detector="threshold",{labels}}} 1.0' in text
        assert f'sketchgen_drift_alarms_total{{detector="cusum",{labels}}}' in text
        assert f"sketchgen_drift_detected{{stream=\"{name}\"}} 1.0" in text
        assert f"sketchgen_drift_threshold{{{labels}}} {status['drift_threshold']!r}" in text
