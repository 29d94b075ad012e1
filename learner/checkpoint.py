"""Model checkpoints: safetensors with JSON metadata, never pickle (BRIEF §4).

A checkpoint is one safetensors blob holding

* the generator's weights (``generator.*``) and, when the trainer keeps one, their
  moving average (``ema.*``), which is what samples come from,
* Adam's state (``optimizer.<i>.exp_avg``, ``…exp_avg_sq``, ``…step``), so
  training resumes exactly where it stopped (warm start),
* the spec's standardisation (``spec.mean``, ``spec.std``), so samples can be
  returned in original units without the spec at hand,

and, in the safetensors header, JSON metadata: format, generator
architecture, spec fingerprint, steps, sketch count, Adam hyper-parameters,
and a SHA-256 over every tensor. Loading parses the header as JSON and the
tensors with safetensors (no code runs), recomputes the digest, and refuses a
tampered, truncated or mismatched file with :class:`CheckpointError`.

Example
-------
>>> from sketch_store.spec import SketchSpec
>>> from learner.generator import GeneratorConfig
>>> from learner.trainer import Trainer
>>> trainer = Trainer(SketchSpec.create(d=2, m=8, seed=0), GeneratorConfig(latent=2, hidden=(4,), output=2))
>>> ckpt = load_checkpoint(checkpoint_bytes(trainer))
>>> ckpt.steps, ckpt.generator_config.hidden
(0, (4,))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from learner.generator import Generator, GeneratorConfig
from learner.trainer import Trainer
from sketch_store.errors import CheckpointError

CHECKPOINT_FORMAT = "sketchgen.checkpoint/1"
MODEL_FILE = "model.safetensors"
_META_KEY = "sketchgen"


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over ``name, dtype, shape, bytes`` of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclasses.dataclass
class Checkpoint:
    """A parsed, verified checkpoint."""

    meta: dict[str, object]
    tensors: dict[str, torch.Tensor]

    @property
    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig.from_dict(self.meta["generator"])  # type: ignore[arg-type]

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def steps(self) -> int:
        return int(self.meta["steps"])  # type: ignore[arg-type]

    @property
    def sketch_count(self) -> int:
        return int(self.meta.get("sketch_count", 0))  # type: ignore[arg-type]

    def generator_state(self) -> dict[str, torch.Tensor]:
        prefix = "generator."
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def ema_state(self) -> dict[str, torch.Tensor]:
        """The averaged generator's weights (empty if the checkpoint has none)."""
        prefix = "ema.module."
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def build_generator(self) -> Generator:
        """The generator samples come from: the weight average if saved, else the raw weights."""
        gen = Generator(self.generator_config)
        try:
            gen.load_state_dict(self.ema_state() or self.generator_state(), strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint weights do not fit its architecture: {exc}") from None
        gen.eval()
        return gen

    def unstandardize(self, y: np.ndarray) -> np.ndarray:
        """Map standardised samples back to the data's units: ``x = y · std + mean``."""
        return y * self.tensors["spec.std"].numpy() + self.tensors["spec.mean"].numpy()

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """``n`` samples in original units."""
        gen = torch.Generator()
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(seed)
        y = self.build_generator().sample(int(n), generator=gen).numpy().astype(np.float64)
        return self.unstandardize(y)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, object]]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, groups


def checkpoint_bytes(trainer: Trainer, extra: dict[str, object] | None = None) -> bytes:
    """Serialise ``trainer`` (generator, Adam state, standardisation, metadata) to safetensors bytes."""
    tensors = {f"generator.{k}": v.detach().cpu().contiguous() for k, v in trainer.generator.state_dict().items()}
    if trainer.ema is not None and int(trainer.ema.n_averaged) > 0:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in trainer.ema.state_dict().items()})
    opt_tensors, groups = _optimizer_tensors(trainer.optimizer)
    tensors.update(opt_tensors)
    tensors["spec.mean"] = torch.as_tensor(trainer.spec.mean.copy(), dtype=torch.float64)
    tensors["spec.std"] = torch.as_tensor(trainer.spec.std.copy(), dtype=torch.float64)
    meta: dict[str, object] = {
        "format": CHECKPOINT_FORMAT,
        "generator": trainer.generator.config.to_dict(),
        "fingerprint": trainer.spec.fingerprint,
        "spec": trainer.spec.describe(),
        "steps": trainer.steps,
        "sketch_count": trainer.target.count if trainer.target is not None else 0,
        "optimizer_groups": groups,
        "created": time.time(),
        "tensor_sha256": tensor_digest(tensors),
    }
    if extra:
        meta.update(extra)
    return st_save(tensors, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})


def _read_header_metadata(data: bytes) -> dict[str, object]:
    """The JSON ``__metadata__`` of a safetensors blob, parsed without touching the tensors."""
    if len(data) < 8:
        raise CheckpointError("checkpoint is truncated (no safetensors header)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8 or size > 100_000_000:
        raise CheckpointError("checkpoint is truncated or not a safetensors file")
    try:
        header = json.loads(data[8 : 8 + size])
        meta = json.loads(header["__metadata__"][_META_KEY])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError("not a sketchgen checkpoint: missing or invalid metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"unsupported checkpoint format {meta.get('format') if isinstance(meta, dict) else '?'}")
    return meta


def load_checkpoint(data: bytes, expected_fingerprint: str | None = None) -> Checkpoint:
    """Parse and verify checkpoint bytes; never unpickles.

    Raises :class:`CheckpointError` if the file is malformed, its tensors do
    not match the digest recorded at save time, or its spec fingerprint
    differs from ``expected_fingerprint``.
    """
    meta = _read_header_metadata(data)
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint tensors are unreadable: {exc}") from None
    if tensor_digest(tensors) != meta.get("tensor_sha256"):
        raise CheckpointError("checkpoint digest mismatch: the file was modified or corrupted")
    if expected_fingerprint is not None and meta.get("fingerprint") != expected_fingerprint:
        raise CheckpointError(
            f"checkpoint was trained for spec {meta.get('fingerprint')}, not {expected_fingerprint}"
        )
    for key in ("spec.mean", "spec.std"):
        if key not in tensors:
            raise CheckpointError(f"checkpoint lacks tensor {key!r}")
    ckpt = Checkpoint(meta=meta, tensors=tensors)
    ckpt.generator_config  # validates the architecture  # noqa: B018
    return ckpt


def restore_trainer(trainer: Trainer, ckpt: Checkpoint) -> None:
    """Load generator weights, Adam state and step count into ``trainer`` (warm start)."""
    if ckpt.fingerprint != trainer.spec.fingerprint:
        raise CheckpointError(f"checkpoint was trained for spec {ckpt.fingerprint}, not {trainer.spec.fingerprint}")
    if ckpt.generator_config != trainer.generator.config:
        raise CheckpointError("checkpoint architecture differs from the trainer's generator")
    trainer.generator.load_state_dict(ckpt.generator_state(), strict=True)
    if trainer.ema is not None:
        ema = {k[len("ema.") :]: v for k, v in ckpt.tensors.items() if k.startswith("ema.")}
        if ema:
            try:
                trainer.ema.load_state_dict(ema, strict=True)
            except RuntimeError as exc:
                raise CheckpointError(f"checkpoint weight average does not fit: {exc}") from None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in ckpt.tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    groups = ckpt.meta.get("optimizer_groups")
    if state and isinstance(groups, list):
        for g in groups:
            if isinstance(g.get("betas"), list):
                g["betas"] = tuple(g["betas"])
        try:
            trainer.optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint optimiser state does not fit: {exc}") from None
    trainer.steps = ckpt.steps


def save_model_dir(path: str | Path, trainer: Trainer, extra: dict[str, object] | None = None) -> Path:
    """Write ``MODEL_DIR/model.safetensors``; returns the file's path."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / MODEL_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(checkpoint_bytes(trainer, extra))
    tmp.replace(target)
    return target


def load_model_dir(path: str | Path, expected_fingerprint: str | None = None) -> Checkpoint:
    """Read ``MODEL_DIR/model.safetensors`` (or a checkpoint file given directly)."""
    p = Path(path)
    file = p / MODEL_FILE if p.is_dir() else p
    if not file.exists():
        raise CheckpointError(f"no model found at {p} (expected {MODEL_FILE})")
    return load_checkpoint(file.read_bytes(), expected_fingerprint)
