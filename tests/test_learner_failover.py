"""The learner through primary failovers, on a real Redis Cluster and a real Sentinel setup.

Two `sketchgen learn` replicas (lease TTL 3 s) run on one stream while the primary holding the
stream's slot is SIGKILLed twice (a replica takes over, the killed node rejoins as a replica). A
poller reads both replicas' ``/status`` and ``/sample`` four times a second. Never may both call
themselves leader at once (the lease is replicated before it counts, and a leader that cannot renew
stops calling itself one after one TTL); both must answer ``/sample`` every time; after the
failovers exactly one leads, and when it is SIGKILLed the other takes over from its checkpoint.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid

import pytest

from sketch_store.redis_connect import connect
from sketch_store.redis_keys import StreamKeys
from sketch_store.redis_store import SketchStore
from tests import redis_topology
from tests.processes import get, wait_for
from tests.test_learner_outages import leader_and_standby, seeded_stream

pytestmark = pytest.mark.slow

redis_cluster = redis_topology.redis_cluster
redis_sentinel = redis_topology.redis_sentinel


class Poller(threading.Thread):
    """Reads both replicas' leadership (A, B, then A again) and a small sample of each, 4 times a second."""

    def __init__(self, ports: tuple[int, int]) -> None:
        super().__init__(daemon=True)
        self.ports = ports
        self.stop_event = threading.Event()
        self.rounds: list[tuple[float, bool, bool, bool]] = []  # (time, A, B, A again)
        self.bad_samples: list[tuple[float, int, int]] = []  # (time, port, status)
        self.errors: list[str] = []

    def leader(self, port: int) -> bool:
        code, body = get(port, "/status")
        return code == 200 and bool(body.get("leader"))

    def run(self) -> None:
        pa, pb = self.ports
        while not self.stop_event.wait(0.25):
            try:
                self.rounds.append((time.monotonic(), self.leader(pa), self.leader(pb), self.leader(pa)))
                for port in self.ports:
                    code, _ = get(port, "/sample?n=20")
                    if code != 200:
                        self.bad_samples.append((time.monotonic(), port, code))
            except Exception as exc:  # a replica that does not answer at all is a failure too
                self.errors.append(repr(exc))

    def two_leaders(self) -> list[float]:
        """Times at which A led before and after B's read while B led too."""
        return [t for t, a, b, a2 in self.rounds if a and b and a2]

    def longest_gap(self) -> float:
        """The longest time without any leader, in seconds."""
        longest, since = 0.0, None
        for t, a, b, a2 in self.rounds:
            if a or b or a2:
                since = None
            else:
                since = t if since is None else since
                longest = max(longest, t - since)
        return longest


@pytest.mark.parametrize("topology", ["redis_cluster", "redis_sentinel"])
def test_one_leader_through_failovers_and_a_takeover_from_the_checkpoint(tmp_path, topology, request):
    topo = request.getfixturevalue(topology)
    name = f"lf-{uuid.uuid4().hex[:8]}"
    store = SketchStore(connect(topo.url))
    seeded_stream(store, name)
    key = StreamKeys(name).meta

    def fail_over() -> None:
        if topology == "redis_cluster":
            topo.fail_over_key(key)
        else:
            topo.fail_over()

    codes: list[int | None] = []
    with leader_and_standby(tmp_path, topology, name, topo.url, codes) as (pa, pb, a, b):
        poller = Poller((pa, pb))
        poller.start()
        try:
            for _ in range(2):
                fail_over()
                time.sleep(5.0)
            wait_for(lambda: sum(poller.leader(p) for p in (pa, pb)) == 1, 30, "exactly one leader after the failovers")
        finally:
            poller.stop_event.set()
            poller.join(15)
        print(f"{len(poller.rounds)} rounds; longest time without a leader {poller.longest_gap():.2f} s")
        assert len(poller.rounds) > 40 and not poller.errors, poller.errors[:5]
        assert not poller.two_leaders(), f"two leaders at {poller.two_leaders()[:5]}\n{a.tail()}\n{b.tail()}"
        assert not poller.bad_samples, poller.bad_samples[:5]
        leader, standby, standby_port = (a, b, pb) if poller.leader(pa) else (b, a, pa)
        steps = get(standby_port, "/status")[1].get("steps") or 0  # a standby has no trainer yet
        wait_for(lambda: store.client.hget(f"{StreamKeys(name).prefix}:checkpoint", "steps") is not None, 30,
                 "a checkpoint")
        resumes = re.compile(r"resumed from the checkpoint at step (\d+)")
        before = len(resumes.findall(standby.log_path.read_text(errors="replace")))
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(10)
        wait_for(lambda: get(standby_port, "/status")[1].get("leader"), 30, "the standby to take over")
        wait_for(lambda: len(resumes.findall(standby.log_path.read_text(errors="replace"))) > before, 30,
                 "the new leader to resume from the checkpoint")
        resumed = int(resumes.findall(standby.log_path.read_text(errors="replace"))[-1])
        assert resumed > 0 and resumed >= steps, (resumed, steps)
        assert get(standby_port, "/sample?n=20")[0] == 200
    store.client.close()
