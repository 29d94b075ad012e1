"""Model checkpoints: safetensors with JSON metadata, never pickle.

A checkpoint is one safetensors blob holding

* the generator's weights (``generator.*``) and, when the trainer keeps one, their
  moving average (``ema.*``), which is what samples come from,
* Adam's state (``optimizer.<i>.exp_avg``, ``…exp_avg_sq``, ``…step``), so
  training resumes exactly where it stopped (warm start),
* the spec's standardisation (``spec.mean``, ``spec.std``), so samples can be
  returned in original units without the spec at hand,

and, in the safetensors header, JSON metadata: format, generator architecture, spec
fingerprint, steps, sketch count, Adam hyper-parameters, optionally the stream incarnation
it was trained for and, for a spec over typed records, ``typed``: its schema and encoding
(so samples decode to records without the spec at hand), and ``sha256``: a SHA-256 over the
canonical JSON of every other metadata field *and* every tensor (name, dtype, shape, bytes), so
neither can change unnoticed.

Loading never runs code: the header is parsed as JSON and checked (tensor entries, dtypes,
offsets) before safetensors reads the tensors; the digest is recomputed; then every metadata
field and every tensor is validated against the declared architecture
(:mod:`learner.checkpoint_schema`). Any malformed, truncated, tampered or mismatched blob is
refused with exactly one :class:`CheckpointError` carrying a one-line reason; a checkpoint
that loads can be built, sampled and restored without any other exception. Checkpoints of
the earlier format ``sketchgen.checkpoint/1`` (whose digest covered the tensors only) are
refused.

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
import math
import struct
import time
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from learner import checkpoint_schema as schema
from learner.generator import Generator, GeneratorConfig
from learner.json_safe import finite
from learner.serving import sample_in_chunks, seeded_rng
from learner.trainer import Trainer
from learner.typed_heads import sample_rng, sample_typed_rows, typed_heads
from sketch_store.errors import CheckpointError, SketchgenError
from sketch_store.schema import Schema
from sketch_store.typed_encoding import Encoder, EncodingStats

CHECKPOINT_FORMAT = "sketchgen.checkpoint/2"
RETIRED_FORMATS = ("sketchgen.checkpoint/1",)
MODEL_FILE = "model.safetensors"
DIGEST_KEY = "sha256"
_META_KEY = "sketchgen"
#: Largest safetensors header read (the metadata of a real checkpoint is a few kB).
MAX_HEADER_BYTES = 16_000_000
#: safetensors dtype names a checkpoint may use, with their item sizes.
_DTYPES = {"F32": 4, "F64": 8, "I64": 8}


def _refuse(message: str) -> NoReturn:
    raise CheckpointError(message)


def canonical_json(value: object) -> str:
    """The one JSON text of ``value`` the digest is computed over (sorted keys, no spaces, no NaN)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over ``name, dtype, shape, bytes`` of every tensor, in name order."""
    h = hashlib.sha256()
    _update_with_tensors(h, tensors)
    return h.hexdigest()


def _update_with_tensors(h: hashlib._Hash, tensors: dict[str, torch.Tensor]) -> None:
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def checkpoint_digest(meta: dict[str, object], tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the canonical JSON of ``meta`` without its ``sha256`` field, then over every tensor."""
    h = hashlib.sha256()
    h.update(b"sketchgen.checkpoint.meta|")
    h.update(canonical_json({k: v for k, v in meta.items() if k != DIGEST_KEY}).encode())
    h.update(b"|tensors|")
    _update_with_tensors(h, tensors)
    return h.hexdigest()


@dataclasses.dataclass
class Checkpoint:
    """A parsed checkpoint; constructing one validates its metadata and tensors (:class:`CheckpointError`)."""

    meta: dict[str, object]
    tensors: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        self._config = schema.validate(self.meta, self.tensors)
        self._encoder = _typed_encoder(self.meta.get("typed"), self._config.output)

    @property
    def generator_config(self) -> GeneratorConfig:
        return self._config

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def steps(self) -> int:
        return int(self.meta["steps"])  # type: ignore[call-overload]

    @property
    def sketch_count(self) -> float:
        count = self.meta["sketch_count"]
        return int(count) if isinstance(count, int) else float(count)  # type: ignore[arg-type]

    @property
    def incarnation(self) -> str | None:
        """The stream incarnation the model was trained for (None in a file written outside a learner)."""
        value = self.meta.get("incarnation")
        return value if isinstance(value, str) else None

    def generator_state(self) -> dict[str, torch.Tensor]:
        prefix = "generator."
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def ema_state(self) -> dict[str, torch.Tensor]:
        """The averaged generator's weights (empty if the checkpoint has none)."""
        prefix = "ema.module."
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def build_generator(self) -> Generator:
        """The generator samples come from: the weight average if saved, else the raw weights (typed: with heads)."""
        gen = Generator(self.generator_config, typed_heads(self.encoder))
        try:
            gen.load_state_dict(self.ema_state() or self.generator_state(), strict=True)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            _refuse(f"checkpoint weights do not fit its architecture: {_one_line(exc)}")
        gen.eval()
        return gen

    @property
    def encoder(self) -> Encoder | None:
        """The encoder of a model trained on typed records (decodes :meth:`sample`'s rows); None if numeric."""
        return self._encoder

    @property
    def mean(self) -> np.ndarray:
        return self.tensors["spec.mean"].numpy()

    @property
    def std(self) -> np.ndarray:
        return self.tensors["spec.std"].numpy()

    def unstandardize(self, y: np.ndarray) -> np.ndarray:
        """Map standardised samples back to the data's units: ``x = y · std + mean``."""
        return y * self.std + self.mean

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """``n`` samples in original units (the network runs in chunks, bounding peak memory).

        For typed records: encoded records, each category, bool and null drawn from the heads' outputs
        (:func:`~learner.typed_heads.sample_typed_rows`), which :attr:`encoder` decodes exactly.
        """
        y = sample_in_chunks(self.build_generator(), int(n), seeded_rng(seed))
        if self.encoder is not None:
            return sample_typed_rows(self.encoder, y, sample_rng(seed))
        return self.unstandardize(y)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _typed_meta(trainer: Trainer) -> dict[str, object] | None:
    """``{"schema": …, "encoding": …}`` of a typed spec (JSON objects; the encoding with the ranges its samples are
    clipped to, :attr:`Trainer.decoder`), None for a numeric one."""
    decoder = trainer.decoder
    if decoder is None:
        return None
    return {"schema": decoder.schema.to_dict(), "encoding": decoder.stats.to_dict()}


def _typed_encoder(raw: object, output: int) -> Encoder | None:
    """The encoder the metadata's ``typed`` field describes, checked against the generator's output width."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"schema", "encoding"}:
        _refuse("checkpoint metadata 'typed' must be an object with keys 'schema' and 'encoding'")
    try:
        encoder = Encoder(Schema.from_dict(raw["schema"]), EncodingStats.from_dict(raw["encoding"]))
    except SketchgenError as exc:
        _refuse(f"checkpoint metadata 'typed' is invalid: {_one_line(exc)}")
    if encoder.dim != output:
        _refuse(f"checkpoint encoding has dimension {encoder.dim}, the generator outputs {output}")
    return encoder


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, object]]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, groups


def checkpoint_bytes(trainer: Trainer, extra: dict[str, object] | None = None,
                     incarnation: str | None = None) -> bytes:
    """Serialise ``trainer`` (generator, Adam state, standardisation, metadata) to safetensors bytes.

    ``incarnation`` records the stream incarnation the model was trained for; ``extra`` adds
    JSON fields (non-finite floats in it are stored as null).
    """
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
    }
    if incarnation is not None:
        meta["incarnation"] = incarnation
    typed = _typed_meta(trainer)
    if typed is not None:
        meta["typed"] = typed
    if extra:
        meta.update(extra)
    meta = finite(meta)  # type: ignore[assignment]
    meta[DIGEST_KEY] = checkpoint_digest(meta, tensors)
    return st_save(tensors, metadata={_META_KEY: canonical_json(meta)})


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _parse_json(text: str | bytes) -> object:
    """Strict JSON (no NaN/Infinity); ValueError, TypeError or RecursionError on anything else."""
    return json.loads(text, parse_constant=_no_constants)


def _read_header(data: bytes) -> tuple[dict[str, object], dict[str, object]]:
    """(safetensors header, sketchgen metadata) of a blob, both parsed without touching the tensors."""
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) < 8:
        _refuse("checkpoint is truncated (no safetensors header)")
    (size,) = struct.unpack("<Q", bytes(data[:8]))
    if size > len(data) - 8 or size > MAX_HEADER_BYTES:
        _refuse("checkpoint is truncated or not a safetensors file")
    try:
        header = _parse_json(bytes(data[8 : 8 + size]))
        meta = _parse_json(header["__metadata__"][_META_KEY])  # type: ignore[index]
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        _refuse("not a sketchgen checkpoint: missing or invalid metadata")
    if not isinstance(meta, dict):
        _refuse("not a sketchgen checkpoint: its metadata is not a JSON object")
    fmt = meta.get("format")
    if fmt in RETIRED_FORMATS:
        _refuse(f"checkpoint format {fmt} is no longer read (its digest did not cover the metadata): "
                "let a learner write a new checkpoint, or fit the model again")
    if fmt != CHECKPOINT_FORMAT:
        _refuse(f"unsupported checkpoint format {str(fmt)[:60]!r} (this version reads {CHECKPOINT_FORMAT})")
    _check_layout(header, len(data) - 8 - size)  # type: ignore[arg-type]
    return header, meta  # type: ignore[return-value]


def _check_layout(header: dict[str, object], data_bytes: int) -> None:
    """Every tensor entry of the header: a known dtype, a shape, offsets tiling the data region exactly."""
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            _refuse(f"checkpoint header entry {name[:60]!r} is malformed")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPES:
            _refuse(f"checkpoint tensor {name[:60]!r} has unsupported dtype {str(dtype)[:20]!r}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(schema.is_integer(s, 0, 1 << 40) for s in shape):
            _refuse(f"checkpoint tensor {name[:60]!r} has a malformed shape")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(
                schema.is_integer(o, 0, data_bytes) for o in offsets):
            _refuse(f"checkpoint tensor {name[:60]!r} lies outside the file (truncated?)")
        if offsets[1] - offsets[0] != math.prod(shape) * _DTYPES[dtype]:
            _refuse(f"checkpoint tensor {name[:60]!r}: its size does not match its shape")
        spans.append((offsets[0], offsets[1]))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            _refuse("checkpoint tensors overlap or leave gaps (corrupted header)")
        position = end
    if position != data_bytes:
        _refuse("checkpoint data region does not match its header (truncated or padded)")


def load_checkpoint(data: bytes, expected_fingerprint: str | None = None) -> Checkpoint:
    """Parse and verify checkpoint bytes; never unpickles.

    Raises :class:`CheckpointError` (and nothing else) if the blob is malformed, its metadata
    or tensors do not match the digest recorded at save time, any field or tensor is invalid,
    or its spec fingerprint differs from ``expected_fingerprint``.
    """
    _, meta = _read_header(data)
    try:
        tensors = st_load(bytes(data))
    except Exception as exc:  # safetensors' own errors; the layout was checked above
        _refuse(f"checkpoint tensors are unreadable: {_one_line(exc)}")
    try:
        digest = checkpoint_digest(meta, tensors)
    except (ValueError, TypeError, RecursionError):
        _refuse("checkpoint metadata cannot be encoded canonically")
    if digest != meta.get(DIGEST_KEY):
        _refuse("checkpoint digest mismatch: the file was modified or corrupted")
    ckpt = Checkpoint(meta=meta, tensors=tensors)
    if expected_fingerprint is not None and ckpt.fingerprint != expected_fingerprint:
        _refuse(f"checkpoint was trained for spec {ckpt.fingerprint[:80]}, not {expected_fingerprint}")
    return ckpt


def restore_trainer(trainer: Trainer, ckpt: Checkpoint) -> None:
    """Load generator weights, weight average, Adam state and step count into ``trainer`` (warm start).

    Everything is checked before the trainer is touched, so a refused checkpoint
    (:class:`CheckpointError`) leaves it as it was.
    """
    if ckpt.fingerprint != trainer.spec.fingerprint:
        _refuse(f"checkpoint was trained for spec {ckpt.fingerprint}, not {trainer.spec.fingerprint}")
    if ckpt.generator_config != trainer.generator.config:
        _refuse("checkpoint architecture differs from the trainer's generator")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in ckpt.tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    groups = None
    if state:
        stored = ckpt.meta["optimizer_groups"]
        groups = schema.restorable_groups(stored, trainer.optimizer.state_dict()["param_groups"])  # type: ignore[arg-type]
    ema = {k[len("ema.") :]: v for k, v in ckpt.tensors.items() if k.startswith("ema.")}
    try:
        trainer.generator.load_state_dict(ckpt.generator_state(), strict=True)
        if trainer.ema is not None and ema:
            trainer.ema.load_state_dict(ema, strict=True)
        if groups is not None:
            trainer.optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        _refuse(f"checkpoint does not fit the trainer: {_one_line(exc)}")
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
