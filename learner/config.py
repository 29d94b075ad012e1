"""Settings of one learner replica (``sketchgen learn``), checked when built.

This module imports no PyTorch (the generator and trainer settings only when a config is built),
so ``sketchgen`` can read the ``learn`` flags' defaults from :class:`LearnConfig`'s fields at
parse time (:func:`sketchgen.config_defaults.default`) and ``sketchgen --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from learner.drift_alarm import check_alarm_settings
from learner.history import DEFAULT_MAXLEN
from sketch_store.errors import SketchgenError

if TYPE_CHECKING:
    from learner.generator import GeneratorConfig
    from learner.trainer import TrainConfig


def default_train_config() -> TrainConfig:
    """The learner's optimiser settings: Adam at 3e-3, samples from the weights' moving average (β 0.995)."""
    from learner.trainer import TrainConfig

    return TrainConfig(lr=3e-3, ema_decay=0.995)


@dataclasses.dataclass(frozen=True)
class LearnConfig:
    """Settings of one learner replica (see ``sketchgen learn --help``).

    ``max_sample`` caps ``n`` of ``/sample`` and ``/density``; ``max_concurrent_samples`` is how
    many of those requests may draw samples at once (beyond it they get 429 at once).
    """

    stream: str
    target: str = "all"
    steps_per_round: int = 200
    checkpoint_every: float = 10.0
    device: str = "auto"
    lease_ttl: float = 10.0
    generator: GeneratorConfig | None = None
    train: TrainConfig = dataclasses.field(default_factory=default_train_config)
    drift_recent: float = 60.0
    drift_reference: float = 600.0
    drift_false_alarms_per_day: float = 1.0
    drift_threshold: float | None = None  # a fixed threshold instead of the calibrated one
    max_sample: int = 100_000
    max_concurrent_samples: int = 2
    history_size: int = DEFAULT_MAXLEN  # points kept for /history (a ring buffer)

    def __post_init__(self) -> None:
        parse_target(self.target)
        if self.steps_per_round < 1 or not self.checkpoint_every > 0 or not self.lease_ttl > 0:
            raise SketchgenError("--steps-per-round, --checkpoint-every and the lease TTL must be positive")
        if self.device not in ("auto", "cpu", "cuda"):
            raise SketchgenError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.history_size < 1:
            raise SketchgenError(f"the history size must be at least 1, got {self.history_size}")
        check_alarm_settings(self.drift_false_alarms_per_day, self.drift_recent, self.drift_threshold)
        if self.max_sample < 1 or self.max_concurrent_samples < 1:
            raise SketchgenError("the sample cap and --max-concurrent-samples must be at least 1")

    @property
    def torch_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise SketchgenError("--device cuda asked for, but PyTorch sees no CUDA device")
        return self.device


def parse_target(text: str) -> tuple[str, float]:
    """``all``, ``window:SECONDS`` or ``halflife:SECONDS`` → (kind, seconds)."""
    kind, _, value = text.partition(":")
    if kind == "all" and not value:
        return "all", 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if kind in ("window", "halflife") and seconds > 0:
        return kind, seconds
    raise SketchgenError(f"--target must be all, window:SECONDS or halflife:SECONDS, got {text!r}")
