"""A bounded history of the learner's rounds, for the live page (``/history``).

Each loop of :class:`learner.service.LearnerService` (a training round on the leader, a
checkpoint poll on a standby, each followed by a drift update) appends one
:class:`HistoryPoint`. Points live in a ring buffer (``collections.deque(maxlen=...)``): once
``maxlen`` points are held, each new one drops the oldest, so memory and the ``/history``
payload stay bounded however long the learner runs (``maxlen`` is ``LearnConfig.history_size``,
2000 by default: at one point per second, the last half hour or so).

Example
-------
>>> h = History(maxlen=3)
>>> for i in range(10):
...     h.record(HistoryPoint(time=float(i), records=100.0 * i, leader=True, loss=1.0 / (i + 1)))
>>> len(h), [p["time"] for p in h.points()]
(3, [7.0, 8.0, 9.0])
>>> [p["time"] for p in h.points(since=8.0)]
[9.0]
>>> h.rate(span=5.0)
100.0
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading

#: Default number of points kept.
DEFAULT_MAXLEN = 2000


@dataclasses.dataclass(frozen=True)
class HistoryPoint:
    """The learner's state after one loop.

    ``loss`` is the plain ``‖z_X − ẑ‖²`` of the round (mean over its last steps) and ``floor``
    its minibatch floor, so ``loss − floor`` is the value of ``sketchgen_learner_loss``; both are
    None on a standby or when no round ran. ``records`` counts the records ingested into the
    stream's all-time sketch.
    """

    time: float
    records: float
    leader: bool
    loss: float | None = None
    floor: float | None = None
    drift: float | None = None
    threshold: float | None = None
    round: int = 0
    steps: int | None = None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict; non-finite floats become None (JSON has no NaN)."""
        out: dict[str, object] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[field.name] = value
        return out


class History:
    """A thread-safe ring buffer of :class:`HistoryPoint` (oldest dropped beyond ``maxlen``)."""

    def __init__(self, maxlen: int = DEFAULT_MAXLEN) -> None:
        if maxlen < 1:
            raise ValueError(f"history maxlen must be at least 1, got {maxlen}")
        self.maxlen = maxlen
        self._points: collections.deque[HistoryPoint] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._points)

    def record(self, point: HistoryPoint) -> None:
        """Append ``point`` (dropping the oldest when full)."""
        with self._lock:
            self._points.append(point)

    def points(self, since: float | None = None) -> list[dict[str, object]]:
        """The held points, oldest first, as JSON dicts; only those newer than ``since`` if given."""
        with self._lock:
            held = list(self._points)
        return [p.to_json() for p in held if since is None or p.time > since]

    def rate(self, span: float = 10.0) -> float | None:
        """Records per second over about the last ``span`` seconds (None with fewer than two points).

        Taken between the newest point and the newest one at least ``span`` seconds older (or the
        oldest held); a count that went down (a stream recreated) gives None rather than a negative rate.
        """
        with self._lock:
            if len(self._points) < 2:
                return None
            last = self._points[-1]
            first = self._points[0]
            for point in reversed(self._points):
                if last.time - point.time >= span:
                    first = point
                    break
        elapsed = last.time - first.time
        if elapsed <= 0 or last.records < first.records:
            return None
        return (last.records - first.records) / elapsed
