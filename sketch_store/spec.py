"""The sketch spec: everything needed to compute a stream's features, and nothing else.

A :class:`SketchSpec` is the source of truth for a stream (docs/design.md §3): the data
dimension ``d``, the number of frequencies ``m``, the frequency law and its
scale σ, the per-dimension standardisation ``s(x) = (x − mean) / std`` applied
before the feature map, and the frequency matrix ``Ω`` itself, stored rather
than re-derived from a seed so that every worker on every version computes
identical features ``Φ(x) = [cos(Ωᵀ s(x)); sin(Ωᵀ s(x))] / √m``.
A spec over typed records also holds their schema and encoding (:mod:`sketch_store.spec_schema`): its rows are
the encoded vectors, ``d`` is the encoding's dimension and ``s`` is the identity.

Specs serialise to ``.npz`` bytes (no pickle) and carry a stable fingerprint.

Example
-------
>>> spec = SketchSpec.create(d=2, m=8, law="gaussian", sigma=1.0, seed=0)
>>> SketchSpec.from_bytes(spec.to_bytes()).fingerprint == spec.fingerprint
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from sketch_store.errors import SpecError
from sketch_store.frequency_laws import LAWS, draw_frequencies, draw_multiscale_frequencies, validate_scales
from sketch_store.schema import Schema
from sketch_store.spec_schema import (
    describe_typed,
    typed_encoder,
    typed_fingerprint_bytes,
    typed_from_arrays,
    typed_to_arrays,
)
from sketch_store.typed_encoding import Encoder, EncodingStats

SPEC_FORMAT = "sketchgen.spec/1"
SCALE_METHODS = ("given", "median", "sketch", "multiscale")
MAX_DIM = 1_000_000
MAX_FREQUENCIES = 10_000_000


def _as_float_array(name: str, value: object, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Return ``value`` as a finite float64 array of ``shape``, or raise :class:`SpecError`."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise SpecError(f"spec field {name!r} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if shape is not None and arr.shape != shape:
        raise SpecError(f"spec field {name!r} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise SpecError(f"spec field {name!r} contains NaN or Inf")
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class SketchSpec:
    """What a sketch is: dimension, frequencies, scale and standardisation.

    Use :meth:`create` to draw a new spec; the constructor validates a spec
    whose fields are already known (e.g. read back from storage).
    """

    d: int
    m: int
    law: str
    sigma: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    omega: np.ndarray
    scale_method: str = "given"
    seed: int | None = None
    name: str = ""
    scales: np.ndarray | None = None
    schema: Schema | None = None
    encoding: EncodingStats | None = None

    def __post_init__(self) -> None:
        d, m = int(self.d), int(self.m)
        if not 1 <= d <= MAX_DIM:
            raise SpecError(f"dimension d must be in [1, {MAX_DIM}], got {self.d}")
        if not 1 <= m <= MAX_FREQUENCIES:
            raise SpecError(f"number of frequencies m must be in [1, {MAX_FREQUENCIES}], got {self.m}")
        if self.law not in LAWS:
            raise SpecError(f"unknown frequency law {self.law!r}; expected one of {', '.join(LAWS)}")
        if self.scale_method not in SCALE_METHODS:
            raise SpecError(
                f"unknown scale method {self.scale_method!r}; expected one of {', '.join(SCALE_METHODS)}"
            )
        sigma = _as_float_array("sigma", self.sigma)
        if sigma.shape not in ((), (d,)):
            raise SpecError(f"spec field 'sigma' has shape {sigma.shape}, expected () or ({d},)")
        if np.any(sigma <= 0):
            raise SpecError("spec field 'sigma' must be positive")
        std = _as_float_array("std", self.std, (d,))
        if np.any(std <= 0):
            raise SpecError("spec field 'std' must be positive")
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "mean", _as_float_array("mean", self.mean, (d,)))
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "omega", _as_float_array("omega", self.omega, (d, m)))
        if self.scales is not None:
            object.__setattr__(self, "scales", validate_scales(self.scales))
        for arr in (self.sigma, self.mean, self.std, self.omega, *self._scales_list()):
            arr.flags.writeable = False
        object.__setattr__(self, "_encoder", typed_encoder(self.schema, self.encoding, d, self.mean, self.std))

    def _scales_list(self) -> list[np.ndarray]:
        return [] if self.scales is None else [self.scales]

    @classmethod
    def create(
        cls,
        d: int,
        m: int,
        law: str = "adapted-radius",
        sigma: float | np.ndarray = 1.0,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        seed: int | None = None,
        scale_method: str = "given",
        name: str = "",
        scales: np.ndarray | None = None,
        schema: Schema | None = None,
        encoding: EncodingStats | None = None,
    ) -> SketchSpec:
        """Draw ``Ω`` from ``law`` at scale ``sigma`` (or on the ladder ``scales``) and build a spec.

        ``mean``/``std`` default to no standardisation (0 and 1); ``schema``/``encoding`` make a typed spec.
        """
        if scales is None:
            omega = draw_frequencies(law, int(d), int(m), sigma, seed)
        else:
            omega = draw_multiscale_frequencies(law, int(d), int(m), np.asarray(scales), seed)
        return cls(
            d=d,
            m=m,
            law=law,
            sigma=np.asarray(sigma, dtype=np.float64),
            mean=np.zeros(int(d)) if mean is None else mean,
            std=np.ones(int(d)) if std is None else std,
            omega=omega,
            scale_method=scale_method,
            seed=seed,
            name=name,
            scales=scales,
            schema=schema,
            encoding=encoding,
        )

    # -- identity ---------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex, 16 chars) over law, d, m, σ, standardisation, Ω (and scales, schema, encoding if set).

        The name, seed and scale method do not change the features and are
        left out, so two specs with the same fingerprint compute identical Φ.
        """
        h = hashlib.sha256()
        h.update(f"{SPEC_FORMAT}|{self.law}|{self.d}|{self.m}|".encode())
        for arr in (self.sigma, self.mean, self.std, self.omega, *self._scales_list()):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr, dtype="<f8").tobytes())
        h.update(typed_fingerprint_bytes(self.schema, self.encoding))
        return h.hexdigest()[:16]

    @property
    def encoder(self) -> Encoder | None:
        """The typed records ↔ vectors encoder of a typed spec; None for a numeric one."""
        return self._encoder  # type: ignore[attr-defined]

    def describe(self) -> str:
        """One-line human summary of the spec."""
        sig = self.sigma
        sig_txt = f"{float(sig):.4g}" if sig.ndim == 0 else f"per-dim [{sig.min():.3g}, {sig.max():.3g}]"
        if self.scales is not None:
            sig_txt = f"{len(self.scales)} scales [{self.scales.max():.3g} .. {self.scales.min():.3g}]"
        return (
            f"d={self.d} m={self.m} law={self.law} sigma={sig_txt} ({self.scale_method}) "
            f"fingerprint={self.fingerprint}{describe_typed(self.schema)}"
        )

    def with_name(self, name: str) -> SketchSpec:
        """A copy of this spec under another name (same fingerprint)."""
        return dataclasses.replace(self, name=name)

    def standardize(self, x: np.ndarray) -> np.ndarray:
        """``s(x) = (x − mean) / std``, row-wise."""
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std

    def unstandardize(self, y: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`standardize`: ``x = y · std + mean``."""
        return np.asarray(y, dtype=np.float64) * self.std + self.mean

    # -- serialisation ----------------------------------------------------

    def to_arrays(self, prefix: str = "spec_") -> dict[str, np.ndarray]:
        """The spec as a dict of plain arrays (for ``np.savez``), keys prefixed."""
        meta = {
            "format": SPEC_FORMAT,
            "d": self.d,
            "m": self.m,
            "law": self.law,
            "scale_method": self.scale_method,
            "seed": self.seed,
            "name": self.name,
            "fingerprint": self.fingerprint,
        }
        arrays = {
            f"{prefix}meta": np.array(json.dumps(meta, sort_keys=True)),
            f"{prefix}sigma": self.sigma,
            f"{prefix}mean": self.mean,
            f"{prefix}std": self.std,
            f"{prefix}omega": self.omega,
        }
        if self.scales is not None:
            arrays[f"{prefix}scales"] = self.scales
        arrays.update(typed_to_arrays(self.schema, self.encoding, prefix))
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "spec_") -> SketchSpec:
        """Rebuild and validate a spec written by :meth:`to_arrays`."""
        missing = [k for k in ("meta", "sigma", "mean", "std", "omega") if f"{prefix}{k}" not in arrays]
        if missing:
            raise SpecError(f"not a sketchgen spec: missing field(s) {', '.join(missing)}")
        try:
            meta = json.loads(str(arrays[f"{prefix}meta"][()]))
        except (ValueError, TypeError) as exc:
            raise SpecError(f"spec metadata is not valid JSON: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != SPEC_FORMAT:
            raise SpecError(f"unsupported spec format {meta.get('format') if isinstance(meta, dict) else meta!r}")
        schema, encoding = typed_from_arrays(arrays, prefix)
        try:
            spec = cls(
                d=int(meta["d"]),
                m=int(meta["m"]),
                law=str(meta["law"]),
                sigma=arrays[f"{prefix}sigma"],
                mean=arrays[f"{prefix}mean"],
                std=arrays[f"{prefix}std"],
                omega=arrays[f"{prefix}omega"],
                scale_method=str(meta.get("scale_method", "given")),
                seed=None if meta.get("seed") is None else int(meta["seed"]),
                name=str(meta.get("name", "")),
                scales=arrays.get(f"{prefix}scales"),
                schema=schema,
                encoding=encoding,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"spec metadata is incomplete or invalid: {exc}") from None
        if meta.get("fingerprint") not in (None, spec.fingerprint):
            raise SpecError(
                f"spec fingerprint mismatch: stored {meta['fingerprint']}, computed {spec.fingerprint} "
                "(the spec was modified or corrupted)"
            )
        return spec

    def to_bytes(self) -> bytes:
        """Serialise to ``.npz`` bytes (no pickle)."""
        buf = io.BytesIO()
        np.savez(buf, **self.to_arrays())
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SketchSpec:
        """Parse bytes written by :meth:`to_bytes`; never unpickles."""
        return cls.from_arrays(load_npz(io.BytesIO(data), what="spec"))

    def save(self, path: str | Path) -> None:
        """Write the spec to an ``.npz`` file."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> SketchSpec:
        """Read a spec ``.npz`` file."""
        return cls.from_bytes(Path(path).read_bytes())


def load_npz(source: io.BytesIO | str | Path, what: str) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` with pickles disabled.

    Format errors (not a zip, object arrays, truncated data) become one
    :class:`SpecError` naming ``what`` was being read.
    """
    try:
        loaded = np.load(source, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise SpecError(f"cannot read {what}: this is a single .npy array, not a sketchgen .npz file")
        with loaded as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"cannot read {what}: not a valid sketchgen .npz file ({exc})") from None
