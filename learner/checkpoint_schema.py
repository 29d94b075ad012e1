"""What a checkpoint's metadata and tensors must be; anything else is refused with one :class:`CheckpointError`.

:func:`validate` checks every known metadata field's type and range and every tensor's name,
dtype, shape and values against the architecture the metadata declares, *before* anything is
built from them. So a checkpoint that passes can be turned into a generator, sampled and
restored into a trainer without any other exception, and one that does not is refused with a
one-line reason. Bounds (:data:`MAX_WIDTH`, :data:`MAX_LAYERS`) keep a hostile file from
asking for a huge network; since the weights must be present in the file with the declared
shapes, nothing larger than the file itself is ever allocated.

Example
-------
>>> import torch
>>> meta = {"generator": {"latent": 1, "hidden": [], "output": 1, "slope": 0.2}, "fingerprint": "f",
...         "spec": "", "steps": 0, "sketch_count": 0, "created": 0.0, "optimizer_groups": []}
>>> tensors = {"generator.net.0.weight": torch.ones(1, 1), "generator.net.0.bias": torch.zeros(1),
...            "spec.mean": torch.zeros(1, dtype=torch.float64), "spec.std": torch.ones(1, dtype=torch.float64)}
>>> validate(meta, tensors).hidden
()
>>> validate({**meta, "steps": -1}, tensors)
Traceback (most recent call last):
...
sketch_store.errors.CheckpointError: checkpoint metadata 'steps' must be an integer in [0, 4611686018427387904], got -1
"""

from __future__ import annotations

import itertools
import math
import re
from typing import NoReturn

import torch

from learner.generator import GeneratorConfig
from sketch_store.errors import CheckpointError, SketchgenError

#: Largest latent, hidden or output width a checkpoint may declare.
MAX_WIDTH = 1 << 16
#: Most hidden layers a checkpoint may declare.
MAX_LAYERS = 64
#: Largest step count.
MAX_STEPS = 1 << 62
#: Longest string field (fingerprint, incarnation, spec description).
MAX_TEXT = 10_000
#: The Adam state tensors of one parameter.
ADAM_STATE = ("exp_avg", "exp_avg_sq", "step")
#: Adam hyper-parameters whose values come from the checkpoint (the others must equal the trainer's).
ADAM_NUMBERS = {"lr": (0.0, 1e6), "eps": (0.0, 1.0), "weight_decay": (0.0, 1e6)}

_OPTIMIZER_NAME = re.compile(r"optimizer\.(0|[1-9][0-9]{0,6})\.(exp_avg|exp_avg_sq|step)")
_GENERATOR_KEYS = {"latent", "hidden", "output", "slope"}


def _refuse(message: str) -> NoReturn:
    raise CheckpointError(message)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_integer(value: object, lo: int, hi: int) -> bool:
    """A JSON integer (not a bool) in [lo, hi]."""
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def is_number(value: object, lo: float, hi: float) -> bool:
    """A finite JSON number (not a bool) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return lo <= value <= hi


def integer_field(meta: dict[str, object], key: str, lo: int, hi: int, where: str = "checkpoint metadata") -> int:
    value = meta.get(key)
    if not is_integer(value, lo, hi):
        _refuse(f"{where} {key!r} must be an integer in [{lo}, {hi}], got {_short(value)}")
    return int(value)  # type: ignore[arg-type]


def number_field(meta: dict[str, object], key: str, lo: float, hi: float, where: str = "checkpoint metadata") -> float:
    value = meta.get(key)
    if not is_number(value, lo, hi):
        _refuse(f"{where} {key!r} must be a number in [{lo:g}, {hi:g}], got {_short(value)}")
    return float(value)  # type: ignore[arg-type]


def text_field(meta: dict[str, object], key: str, min_length: int = 0) -> str:
    value = meta.get(key)
    if not isinstance(value, str) or not min_length <= len(value) <= MAX_TEXT:
        _refuse(f"checkpoint metadata {key!r} must be a string of {min_length} to {MAX_TEXT} characters, "
                f"got {_short(value)}")
    return value


def generator_config(raw: object) -> GeneratorConfig:
    """The architecture declared by the metadata's ``generator`` field, checked field by field."""
    if not isinstance(raw, dict):
        _refuse(f"checkpoint metadata 'generator' must be an object, got {_short(raw)}")
    if set(raw) != _GENERATOR_KEYS:
        _refuse(f"checkpoint metadata 'generator' must have exactly the keys {sorted(_GENERATOR_KEYS)}, "
                f"got {sorted(map(str, raw))}")
    where = "checkpoint architecture"
    latent = integer_field(raw, "latent", 1, MAX_WIDTH, where)
    output = integer_field(raw, "output", 1, MAX_WIDTH, where)
    slope = number_field(raw, "slope", 0.0, 1.0, where)
    hidden = raw["hidden"]
    if not isinstance(hidden, list) or len(hidden) > MAX_LAYERS or not all(is_integer(h, 1, MAX_WIDTH)
                                                                         for h in hidden):
        _refuse(f"{where} 'hidden' must be a list of at most {MAX_LAYERS} widths in [1, {MAX_WIDTH}], "
                f"got {_short(hidden)}")
    try:
        return GeneratorConfig(latent=latent, hidden=tuple(hidden), output=output, slope=slope)
    except SketchgenError as exc:
        _refuse(f"{where} is invalid: {exc}")


def optimizer_groups(raw: object) -> list[dict[str, object]]:
    """The metadata's ``optimizer_groups``: Adam's parameter groups (params, lr, betas, eps, weight decay, flags)."""
    if not isinstance(raw, list) or len(raw) > 16:
        _refuse(f"checkpoint metadata 'optimizer_groups' must be a list of at most 16 groups, got {_short(raw)}")
    for group in raw:
        if not isinstance(group, dict) or len(group) > 32:
            _refuse(f"checkpoint optimiser group must be an object of at most 32 keys, got {_short(group)}")
        params = group.get("params")
        if not isinstance(params, list) or not all(is_integer(p, 0, 1 << 20) for p in params):
            _refuse(f"checkpoint optimiser group 'params' must be a list of parameter indices, got {_short(params)}")
        for key, (lo, hi) in ADAM_NUMBERS.items():
            number_field(group, key, lo, hi, "checkpoint optimiser group")
        betas = group.get("betas")
        if not isinstance(betas, list) or len(betas) != 2 or not all(is_number(b, 0.0, 0.999999999) for b in betas):
            _refuse(f"checkpoint optimiser group 'betas' must be two numbers in [0, 1), got {_short(betas)}")
        for key, value in group.items():
            if key not in ADAM_NUMBERS and key not in ("params", "betas") and not (
                    value is None or isinstance(value, bool) or is_number(value, -1e300, 1e300)
                    or (isinstance(value, str) and len(value) <= 100)):
                _refuse(f"checkpoint optimiser group {key!r} must be a flag, a number or a short string, "
                        f"got {_short(value)}")
    return raw  # type: ignore[return-value]


def validate_meta(meta: object) -> GeneratorConfig:
    """Check every known metadata field (unknown ones are kept as they are); returns the architecture."""
    if not isinstance(meta, dict):
        _refuse(f"checkpoint metadata must be a JSON object, got {type(meta).__name__}")
    text_field(meta, "fingerprint", min_length=1)
    text_field(meta, "spec")
    integer_field(meta, "steps", 0, MAX_STEPS)
    number_field(meta, "sketch_count", 0.0, 1e300)
    number_field(meta, "created", 0.0, 1e300)
    optimizer_groups(meta.get("optimizer_groups"))
    if "incarnation" in meta:
        text_field(meta, "incarnation")
    if "rounds" in meta:
        integer_field(meta, "rounds", 0, MAX_STEPS)
    return generator_config(meta.get("generator"))


def parameter_shapes(config: GeneratorConfig) -> dict[str, tuple[int, ...]]:
    """Name → shape of every parameter of :class:`learner.generator.Generator`, in ``parameters()`` order."""
    widths = [config.latent, *config.hidden, config.output]
    shapes: dict[str, tuple[int, ...]] = {}
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        shapes[f"net.{2 * layer}.weight"] = (fan_out, fan_in)
        shapes[f"net.{2 * layer}.bias"] = (fan_out,)
    return shapes


def _check_tensor(name: str, tensor: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    if tensor.dtype != dtype or tuple(tensor.shape) != shape:
        _refuse(f"checkpoint tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, expected {dtype} {shape}")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        _refuse(f"checkpoint tensor {name!r} holds NaN or infinite values")


def _check_weights(tensors: dict[str, torch.Tensor], prefix: str, shapes: dict[str, tuple[int, ...]]) -> None:
    names = {k[len(prefix):] for k in tensors if k.startswith(prefix)}
    if names != set(shapes):
        missing, extra = sorted(set(shapes) - names), sorted(names - set(shapes))
        _refuse(f"checkpoint weights {prefix}* do not fit its architecture (missing {missing}, unexpected {extra})")
    for name, shape in shapes.items():
        found = tuple(tensors[prefix + name].shape)
        if found != shape:
            _refuse(f"checkpoint weights do not fit its architecture: {prefix + name!r} has shape {found}, "
                    f"expected {shape}")
        _check_tensor(prefix + name, tensors[prefix + name], torch.float32, shape)


def _check_average(tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> None:
    if not any(k.startswith("ema.") for k in tensors):
        return
    if "ema.n_averaged" not in tensors:
        _refuse("checkpoint weight average lacks 'ema.n_averaged'")
    _check_tensor("ema.n_averaged", tensors["ema.n_averaged"], torch.int64, ())
    if int(tensors["ema.n_averaged"]) < 1:
        _refuse("checkpoint weight average 'ema.n_averaged' must be at least 1")
    _check_weights({k: v for k, v in tensors.items() if k != "ema.n_averaged"}, "ema.module.", shapes)


def _check_optimizer(tensors: dict[str, torch.Tensor], shapes: list[tuple[int, ...]],
                     groups: list[dict[str, object]]) -> None:
    state: dict[int, set[str]] = {}
    for name in tensors:
        if name.startswith("optimizer."):
            match = _OPTIMIZER_NAME.fullmatch(name)
            if match is None or int(match.group(1)) >= len(shapes):
                _refuse(f"unexpected optimiser tensor {name!r} (the generator has {len(shapes)} parameters)")
            state.setdefault(int(match.group(1)), set()).add(match.group(2))
    if state and (set(state) != set(range(len(shapes))) or any(keys != set(ADAM_STATE) for keys in state.values())):
        _refuse("checkpoint optimiser state is incomplete: every parameter needs exp_avg, exp_avg_sq and step")
    for index in state:
        for key in ("exp_avg", "exp_avg_sq"):
            _check_tensor(f"optimizer.{index}.{key}", tensors[f"optimizer.{index}.{key}"], torch.float32,
                          shapes[index])
        step = tensors[f"optimizer.{index}.step"]
        _check_tensor(f"optimizer.{index}.step", step, torch.float32, ())
        if float(step) < 0 or bool((tensors[f"optimizer.{index}.exp_avg_sq"] < 0).any()):
            _refuse(f"checkpoint optimiser state of parameter {index} is negative")
    indices = [p for group in groups for p in group["params"]]  # type: ignore[union-attr]
    if (state or groups) and sorted(indices) != list(range(len(shapes))):
        _refuse(f"checkpoint optimiser groups list parameters {_short(indices)}, the generator has {len(shapes)}")


def validate_tensors(tensors: dict[str, torch.Tensor], config: GeneratorConfig,
                     groups: list[dict[str, object]]) -> None:
    """Check names, dtypes, shapes and values of every tensor against the architecture ``config``."""
    shapes = parameter_shapes(config)
    for name in tensors:
        if not (name.startswith(("generator.", "ema.", "optimizer.")) or name in ("spec.mean", "spec.std")):
            _refuse(f"unexpected tensor {name!r} in checkpoint")
    for key in ("spec.mean", "spec.std"):
        if key not in tensors:
            _refuse(f"checkpoint lacks tensor {key!r}")
        _check_tensor(key, tensors[key], torch.float64, (config.output,))
    if not bool((tensors["spec.std"] > 0).all()):
        _refuse("checkpoint standardisation 'spec.std' must be positive")
    _check_weights(tensors, "generator.", shapes)
    _check_average(tensors, shapes)
    _check_optimizer(tensors, list(shapes.values()), groups)


def validate(meta: object, tensors: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Check metadata and tensors together (see module docstring); returns the architecture."""
    config = validate_meta(meta)
    validate_tensors(tensors, config, meta["optimizer_groups"])  # type: ignore[index]
    return config


def restorable_groups(stored: list[dict[str, object]], current: list[dict[str, object]]) -> list[dict[str, object]]:
    """Adam's ``param_groups`` to load: the stored numbers, provided every flag equals the trainer's own.

    ``current`` is ``optimizer.state_dict()["param_groups"]`` of the trainer restored into. A
    checkpoint written with other optimiser settings (amsgrad, maximize, fused, ...) is refused
    rather than loaded into an optimiser that would then fail or behave differently.
    """
    if len(stored) != len(current):
        _refuse(f"checkpoint has {len(stored)} optimiser groups, the trainer {len(current)}")
    groups = []
    for saved, own in zip(stored, current, strict=True):
        if set(saved) != set(own):
            _refuse(f"checkpoint optimiser settings {sorted(saved)} differ from the trainer's {sorted(own)}")
        if list(saved["params"]) != list(own["params"]):  # type: ignore[call-overload]
            _refuse("checkpoint optimiser groups hold other parameters than the trainer's")
        for key, value in own.items():
            if key not in ADAM_NUMBERS and key not in ("params", "betas") and saved[key] != value:
                _refuse(f"checkpoint optimiser setting {key!r} is {_short(saved[key])}, the trainer's {_short(value)}")
        groups.append({**saved, "betas": tuple(saved["betas"])})  # type: ignore[arg-type]
    return groups
