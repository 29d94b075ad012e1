"""Exactly-once ingestion through primary failovers, on a real Redis Cluster and a real Sentinel setup.

The chaos runs (tests/chaos.py) stream about 15 000 valid records mixed with malformed ones into four
partitions while workers are killed, paused past their TTL and rescaled, and the primary holding the
stream's slot is SIGKILLed three times (a replica takes over; the killed node rejoins as a replica).
The final count and sum must equal the offline sketch of the valid rows, every malformed record must
be in the dead-letter topic, and a monitor checks twice a second that every partition's stored count
equals the valid rows below its stored offset.

A failover with asynchronous replication may lose the primary's last writes. With SIGKILL on loopback
that is rare, so :func:`test_a_tail_lost_in_a_failover_is_read_again_from_kafka` makes it certain:
the replica is stopped while a worker flushes, then the primary is killed and the stopped replica,
resumed, is promoted without those flushes. The worker's next flush is refused (Redis's offset is
older than its own), it claims the partition again at Redis's offset and reads the lost tail again.
"""

from __future__ import annotations

import random

import pytest

from tests import redis_topology
from tests.chaos import ChaosConfig, ChaosRun, FailoverRedis, Fault

pytestmark = pytest.mark.slow

redis_cluster = redis_topology.redis_cluster
redis_sentinel = redis_topology.redis_sentinel


def failover_plan() -> list[Fault]:
    """Kills, pauses past the TTL, rescales, and three failovers at least 14 s apart; over by ~62 s."""
    rng = random.Random(5)
    plan = [
        Fault(rng.uniform(3.0, 5.0), "kill"),
        Fault(8.0, "scale", target=3),
        Fault(14.0, "failover"),
        Fault(30.0, "failover"),
        Fault(46.0, "failover"),
        Fault(60.0, "scale", target=1),
    ]
    for i in range(3):
        plan.append(Fault(rng.uniform(12.0 + 14.0 * i, 22.0 + 14.0 * i), "pause", hold=rng.uniform(8.0, 10.0)))
        plan.append(Fault(rng.uniform(18.0 + 12.0 * i, 26.0 + 12.0 * i), "kill"))
    return sorted(plan)


def _chaos(tmp_path, kafka, backend: FailoverRedis) -> None:
    config = ChaosConfig(
        valid_records=15_000, rate=260.0, bad_fraction=0.03, partitions=4, initial_workers=1, fault_skewed=False,
        seed=5, settle_timeout_s=60.0, dlq_timeout_s=30.0, run_timeout_s=150.0,
    )
    result = ChaosRun(config, tmp_path, kafka, redis_backend=backend).execute(failover_plan())
    (tmp_path / "events.log").write_text(result.events.text())
    report = result.report()
    print(report)
    caused = result.caused
    minimums = {
        "completed failovers": (caused["failover"], 2),
        "SIGKILLed workers": (caused["kill"], 3),
        "pauses longer than the TTL": (caused["pause"], 2),
        "scale-ups": (caused["scale up"], 1),
        "scale-downs": (caused["scale down"], 1),
        "valid records": (result.facts["valid records"], 15_000),
    }
    problems = [f"only {got:g} {what} (at least {least} wanted)" for what, (got, least) in minimums.items()
                if got < least]
    assert not problems + result.errors, "\n".join([*problems, *result.errors, "", report])


def test_ingest_exact_through_cluster_failovers(tmp_path, kafka_server, redis_cluster):
    _chaos(tmp_path, kafka_server.bootstrap, FailoverRedis(redis_cluster.url, redis_cluster.fail_over_key))


def test_ingest_exact_through_sentinel_failovers(tmp_path, kafka_server, redis_sentinel):
    _chaos(tmp_path, kafka_server.bootstrap, FailoverRedis(redis_sentinel.url, lambda _key: redis_sentinel.fail_over()))
