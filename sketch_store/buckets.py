"""A stream's time-bucket levels: resolution and retention per level, finest first.

Each level holds buckets of ``seconds`` seconds; a bucket expires ``keep`` seconds after it ends, so a
level holds at most ``ceil(keep / seconds) + 1`` live buckets (docs/ingest.md, "Memory of a stream").
A window or decayed read of horizon ``h`` uses the finest level with ``keep >= h`` (the coarsest one
beyond every retention): its edge error is at most one bucket, ``seconds / h`` of the window.

New streams get :data:`DEFAULT_BUCKETS`: ``fine`` 10 s kept 1 h, ``coarse`` 5 min kept 1 day,
``long`` 1 h kept 7 days. Streams created before the long level existed store a config with only
``fine_*`` and ``coarse_*`` fields; it loads as those two levels (the field defaults, below, are that
old layout: fine 10 s / 1 h, coarse 5 min / 7 days) and behaves exactly as before.

Example
-------
>>> [(lv.name, lv.seconds, lv.keep, lv.buckets) for lv in DEFAULT_BUCKETS.levels]
[('fine', 10, 3600, 361), ('coarse', 300, 86400, 289), ('long', 3600, 604800, 169)]
>>> DEFAULT_BUCKETS.level_for(2 * 86400).name
'long'
>>> BucketConfig.from_json('{"fine_seconds": 10, "fine_keep": 3600, "coarse_seconds": 300, '
...                        '"coarse_keep": 604800}').names
('fine', 'coarse')
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

from sketch_store.errors import SketchgenError

#: Every level a stream may have, finest first (a stream has the ones its config sets).
LEVELS = ("fine", "coarse", "long")


@dataclasses.dataclass(frozen=True)
class BucketLevel:
    """One level: buckets of ``seconds`` seconds, each kept ``keep`` seconds after it ends."""

    name: str
    seconds: int
    keep: int

    @property
    def buckets(self) -> int:
        """Live buckets at full retention: ``ceil(keep / seconds) + 1`` (docs/ingest.md, "Memory of a stream")."""
        return math.ceil(self.keep / self.seconds) + 1


@dataclasses.dataclass(frozen=True)
class BucketConfig:
    """Resolution ``<level>_seconds`` and retention ``<level>_keep`` of each level in :data:`LEVELS`.

    A level whose two fields are None is absent. The field defaults are the two-level layout of
    streams created before the long level existed; new streams get :data:`DEFAULT_BUCKETS`.
    Valid: the fine level set, every value positive, each level's resolution a multiple of the
    previous level's and its retention at least the previous level's (module docstring).
    """

    fine_seconds: int = 10
    fine_keep: int = 3600
    coarse_seconds: int | None = 300
    coarse_keep: int | None = 7 * 24 * 3600
    long_seconds: int | None = None
    long_keep: int | None = None

    def __post_init__(self) -> None:
        levels = self.levels
        if not levels or levels[0].name != LEVELS[0]:
            raise SketchgenError(f"the {LEVELS[0]} bucket level needs a resolution and a retention")
        for prev, level in itertools.pairwise(levels):
            check_level_pair(prev, level)

    @property
    def levels(self) -> tuple[BucketLevel, ...]:
        """The levels this config sets, finest first."""
        return tuple(level for level in map(self._declared, LEVELS) if level is not None)

    def _declared(self, name: str) -> BucketLevel | None:
        """Level ``name`` from its two fields; None when both are None."""
        seconds, keep = getattr(self, f"{name}_seconds"), getattr(self, f"{name}_keep")
        if seconds is None and keep is None:
            return None
        if seconds is None or keep is None:
            raise SketchgenError(f"the {name} bucket level needs both a resolution and a retention, or neither")
        if not (isinstance(seconds, int) and isinstance(keep, int)) or seconds <= 0 or keep <= 0:
            raise SketchgenError(f"bucket resolutions and retention must be positive integers "
                                 f"(the {name} level has {seconds!r} s kept {keep!r} s)")
        return BucketLevel(name, seconds, keep)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(level.name for level in self.levels)

    def level(self, name: str) -> BucketLevel:
        """The level called ``name``; :class:`SketchgenError` if this config has none."""
        for level in self.levels:
            if level.name == name:
                return level
        raise SketchgenError(f"unknown bucket level {name!r} (this stream has {', '.join(self.names)})")

    def resolution(self, level: str) -> int:
        return self.level(level).seconds

    def keep(self, level: str) -> int:
        return self.level(level).keep

    def level_for(self, horizon: float) -> BucketLevel:
        """The finest level whose retention covers ``horizon`` seconds, else the one kept longest."""
        return next((level for level in self.levels if horizon <= level.keep), self.levels[-1])

    def redundant(self) -> list[BucketLevel]:
        """Levels kept no longer than the level before them: no read ever uses them."""
        levels = self.levels
        return [level for prev, level in itertools.pairwise(levels) if level.keep <= prev.keep]

    def to_json(self) -> str:
        """The JSON stored in a stream's meta hash (``buckets``): the fields of the levels it sets."""
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v is not None})

    @classmethod
    def from_json(cls, raw: str | bytes) -> BucketConfig:
        """A stored config; a field absent from it is None (so a two-level config stays two levels)."""
        try:
            fields = json.loads(raw)
            return cls(**{f.name: fields.get(f.name) for f in dataclasses.fields(cls)})
        except (ValueError, TypeError, AttributeError) as exc:
            raise SketchgenError(f"the stored bucket config {raw!r} is not valid: {exc}") from None


def check_level_pair(prev: BucketLevel, level: BucketLevel) -> None:
    """Refuse a level whose resolution is not a multiple of the previous one's or whose retention is shorter."""
    if level.seconds % prev.seconds:
        raise SketchgenError(f"the {level.name} bucket resolution ({level.seconds} s) must be a multiple of "
                             f"the {prev.name} one ({prev.seconds} s)")
    if level.keep < prev.keep:
        raise SketchgenError(f"the {level.name} bucket retention ({level.keep} s) must be at least the "
                             f"{prev.name} one ({prev.keep} s)")


#: The levels of a new stream: fine 10 s kept 1 h, coarse 5 min kept 1 day, long 1 h kept 7 days.
DEFAULT_BUCKETS = BucketConfig(fine_seconds=10, fine_keep=3600, coarse_seconds=300, coarse_keep=86400,
                               long_seconds=3600, long_keep=7 * 24 * 3600)
