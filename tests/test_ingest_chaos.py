"""Exactly-once ingestion through a live stream with every kind of fault at once (tests/chaos.py).

Four partitions, ≥ 30 000 valid records mixed with malformed ones of every reject reason, streamed
live for about 90 s while:

* the group runs 1 worker, is scaled to 3, and back to 1 near the end (clean starts and stops);
* 8 workers are paused with SIGSTOP for 9–11 s (longer than the 6 s member TTL, the default) and
  resumed with SIGCONT — their partitions move meanwhile, and they come back holding stale claims;
* 5 workers are SIGKILLed (the first while it is alone) and restarted;
* one worker runs for 22 s with its wall clock 45 s ahead (libfaketime, as ``faketime -f +45s``);
* Redis (this test's own, AOF with ``appendfsync always``) is SIGKILLed and restarted on its port.

Fault times are drawn from a fixed seed. The run prints what it caused (pauses, kills, fences counted in
the worker logs, …) and the test asserts a minimum of each, then exactness: the count equals the number
of valid rows, the sum equals the offline sketch of those rows (relative error ≤ 1e-9), every malformed
record is in the dead-letter topic with its reason, every worker is alive at the end. A monitor also
checks, twice a second and per partition, that the stored count equals the valid rows below the stored
next offset, so the report names the first moment a partition went wrong and the faults just before.
"""

from __future__ import annotations

import random

import pytest

from tests.chaos import ChaosConfig, ChaosRun, Fault

pytestmark = pytest.mark.slow

PLAN_SEED = 11
SKEW_S = 45.0


def chaos_plan(rng: random.Random) -> list[Fault]:
    """The test's faults: phases fixed, times within each drawn from ``rng``; all over by ~84 s."""
    plan = [
        Fault(rng.uniform(3.0, 6.0), "kill"),  # the lone worker
        Fault(10.0, "scale", target=3),
        Fault(rng.uniform(13.0, 17.0), "skew", hold=22.0),
        Fault(rng.uniform(44.0, 52.0), "redis", hold=3.0),
        Fault(84.0, "scale", target=1),
    ]
    for i in range(8):  # one pause in each of eight windows of [14, 70] s, held longer than the TTL
        plan.append(Fault(rng.uniform(14.0 + 7.0 * i, 14.0 + 7.0 * (i + 1)), "pause", hold=rng.uniform(9.0, 11.0)))
    for i in range(4):  # one kill in each of four windows of [16, 76] s
        plan.append(Fault(rng.uniform(16.0 + 15.0 * i, 16.0 + 15.0 * (i + 1)), "kill"))
    return sorted(plan)


def test_ingest_exact_through_pauses_kills_skew_rescaling_and_redis_crash(tmp_path, kafka_server):
    config = ChaosConfig(
        valid_records=32_000, rate=370.0, bad_fraction=0.03, partitions=4, initial_workers=1, skew_s=SKEW_S,
        fault_skewed=False, seed=PLAN_SEED, settle_timeout_s=40.0, dlq_timeout_s=20.0, run_timeout_s=130.0,
    )
    result = ChaosRun(config, tmp_path, kafka_server.bootstrap).execute(chaos_plan(random.Random(PLAN_SEED)))
    (tmp_path / "events.log").write_text(result.events.text())
    report = result.report()
    print(report)

    logs = result.logs
    caused, fences = result.caused, logs["fences"] + logs["offset fences"] + logs["fences seen after a pause"]
    print(f"caused: {caused['pause']} pauses > TTL, {caused['kill']} SIGKILLs, {caused['redis restart']} Redis "
          f"restarts, {caused['skewed worker']} skewed worker, {fences} fences")
    minimums = {
        "pauses longer than the TTL": (caused["pause"], 4),
        "SIGKILLs": (caused["kill"], 4),
        "Redis SIGKILLs": (caused["redis kill"], 1),
        "Redis restarts": (caused["redis restart"], 1),
        "scale-ups": (caused["scale up"], 1),
        "scale-downs": (caused["scale down"], 1),
        "skewed workers": (caused["skewed worker"], 1),
        "seconds of clock skew seen in a skewed worker's log": (result.facts["skewed clock seen in a log (s)"], 30),
        "fences": (fences, 1),
        "valid records": (result.facts["valid records"], 30_000),
    }
    failures = result.failures(minimums)
    assert not failures, "\n".join([*failures, "", report])
