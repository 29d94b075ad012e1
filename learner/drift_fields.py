"""Drift per field: which fields moved between the reference and the recent sketch (docs/design.md §1).

With ``z_k`` the k-th complex feature of a sketch (``Φ`` scaled by ``1/√m``, so ``Σ_k |z_k|² = ‖z‖²``), the squared
difference ``|Δz_k|² = |z_recent,k − z_ref,k|²`` has the null expectation

``v_k = (1/m − |z_k|²)(1/n_recent + 1/n_ref)``   (pooled ``z_k``; ``Σ_k v_k`` is the stream's null level),

and a change in field j alone multiplies ``z_k`` by a factor that depends only on ``ω_kj`` (the frequency's
coordinates in j's encoded columns). So field j is seen by the frequencies pointing along it, and

``s_j = Σ_k w_kj |Δz_k|² / Σ_k w_kj v_k``,   ``w_kj = r_kj^p``,   ``r_kj = Σ_{c ∈ j} ω_kc² / ‖ω_k‖²``

is ≈ 1 under no change for any weights (expectation of the numerator over the denominator), and large for the
field that moved. ``r_kj`` is the share of frequency k's squared norm in field j's columns (one column for a
numeric field; the one-hot slots and the null indicator of a typed field). :data:`WEIGHT_POWER` ``p = 2``
favours the frequencies that see mostly field j: of the weightings ``p = 1, 2, 3, 4, 8`` and an arg-max indicator,
it ranked the changed field first most often (77.7 % of 3200 trials over d = 2…20, mean and variance changes
of several sizes; 100 % wherever the stream's score exceeded 5; ``bench/drift_fields_ranking.py``).
A category field also gets a score per category column ``c`` (``r_kc = ω_kc²/‖ω_k‖²`` in place of ``r_kj``); the
top :data:`TOP_CATEGORIES` are reported.

The weights depend on Ω only and are computed once per spec (:func:`field_weights`); an update then costs
two matrix-vector products, O(m) per field (bench/drift_fields_cost.py).

Example
-------
>>> import numpy as np
>>> from sketch_store.sketch import Sketch
>>> from sketch_store.spec import SketchSpec
>>> spec = SketchSpec.create(d=3, m=300, law="gaussian", seed=0)
>>> rng = np.random.default_rng(0)
>>> reference = Sketch.from_data(spec, rng.normal(size=(4000, 3)))
>>> recent = Sketch.from_data(spec, rng.normal(size=(1000, 3)) + [0.0, 0.4, 0.0])
>>> top = field_scores(recent, reference, spec)
>>> [(f.name, round(f.score)) for f in top]   # x1 moved; the others see it only through shared frequencies
[('x1', 30), ('x2', 7), ('x0', 6)]
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

from learner.drift import MIN_RECORDS
from sketch_store.errors import SpecMismatchError
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec

#: The exponent p of the weights ``w_kj = r_kj^p`` (chosen by bench/drift_fields_ranking.py).
WEIGHT_POWER = 2
#: Categories reported per category field (the most moved first).
TOP_CATEGORIES = 3


@dataclasses.dataclass(frozen=True, slots=True)
class FieldScore:
    """A field's drift score (≈ 1 unchanged) and, for a category field, its most moved categories."""

    name: str
    score: float
    categories: list[tuple[str, float]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """The ``/status`` form: ``{"field", "score", "categories": [{"category", "score"}, …]}``."""
        return {"field": self.name, "score": self.score,
                "categories": [{"category": c, "score": s} for c, s in self.categories]}


@dataclasses.dataclass(frozen=True, eq=False)
class FieldWeights:
    """The weights of one spec: ``W`` (m × fields), and per category field its columns' weights (m × K)."""

    fingerprint: str
    names: tuple[str, ...]
    weights: np.ndarray
    categories: dict[int, tuple[tuple[str, ...], np.ndarray]]  # field index → (category names, m × K weights)


#: Specs whose weights are kept (by fingerprint; the learner re-reads its spec every round, same fingerprint).
CACHE_SIZE = 8
_CACHE: collections.OrderedDict[str, FieldWeights] = collections.OrderedDict()


def column_shares(omega: np.ndarray) -> np.ndarray:
    """``ω_kc² / ‖ω_k‖²`` for every frequency k (rows) and encoded column c (columns): each row sums to 1."""
    sq = np.asarray(omega, dtype=np.float64).T ** 2
    norm = sq.sum(axis=1, keepdims=True)
    return sq / np.where(norm > 0, norm, 1.0)


def column_groups(spec: SketchSpec) -> list[tuple[str, list[int], list[tuple[str, int]]]]:
    """Per field: its name, its encoded columns, and for a category field ``(category, column)`` per slot.

    A numeric spec has fields ``x0 … x(d−1)``, one column each; a typed spec's layout comes from its encoder's
    blocks (one-hot slots, then the null indicator when nullable).
    """
    encoder = spec.encoder
    if encoder is None:
        return [(f"x{j}", [j], []) for j in range(spec.d)]
    groups = []
    for block in encoder.blocks:
        columns = list(range(block.start, block.start + block.width))
        slots = [(value, block.start + offset) for value, offset in block.slots.items()]
        if block.field.nullable and slots:
            slots.append(("null", block.indicator))
        groups.append((block.field.name, columns, slots))
    return groups


def build_field_weights(spec: SketchSpec, power: float = WEIGHT_POWER) -> FieldWeights:
    """``w_kj = (Σ_{c ∈ j} ω_kc²/‖ω_k‖²)^p`` per field and ``(ω_kc²/‖ω_k‖²)^p`` per category column (§1)."""
    shares = column_shares(spec.omega)
    groups = column_groups(spec)
    weights = np.stack([shares[:, cols].sum(axis=1) for _, cols, _ in groups], axis=1) ** power
    categories = {j: (tuple(name for name, _ in slots), shares[:, [c for _, c in slots]] ** power)
                  for j, (_, _, slots) in enumerate(groups) if slots}
    return FieldWeights(spec.fingerprint, tuple(name for name, _, _ in groups), weights, categories)


def field_weights(spec: SketchSpec, fingerprint: str) -> FieldWeights:
    """The :class:`FieldWeights` at :data:`WEIGHT_POWER` of the spec of ``fingerprint``, built once from ``spec``.

    Looked up by the sketches' fingerprint (no hashing of Ω per update); on a miss ``spec`` must have that
    fingerprint, else :class:`~sketch_store.errors.SpecMismatchError`.
    """
    cached = _CACHE.get(fingerprint)
    if cached is None:
        if spec.fingerprint != fingerprint:
            raise SpecMismatchError(f"sketches of spec {fingerprint} scored with spec {spec.fingerprint}")
        cached = _CACHE[fingerprint] = build_field_weights(spec)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return cached


def frequency_terms(recent: Sketch, reference: Sketch) -> np.ndarray:
    """``[|Δz_k|², v_k]`` per frequency (a 2 × m array): the squared difference and its null expectation.

    ``v_k = (1/m − |z_k|²)(1/n_recent + 1/n_ref)`` with the pooled ``z_k``.
    """
    m, a, b = recent.m, recent.total, reference.total
    diff = a / recent.count - b / reference.count
    pooled = (a + b) / (recent.count + reference.count)
    diff *= diff
    pooled *= pooled
    out = np.empty((2, m))  # in place: an update is a handful of O(m) passes
    np.add(diff[:m], diff[m:], out=out[0])
    np.add(pooled[:m], pooled[m:], out=out[1])
    np.subtract(1.0 / m, out[1], out=out[1])
    out[1] *= 1.0 / recent.count + 1.0 / reference.count
    return out


def weighted_ratio(weights: np.ndarray, terms: np.ndarray) -> list[float]:
    """``s = Σ_k w_k |Δz_k|² / Σ_k w_k v_k`` for every column of ``weights`` (NaN where the null level is 0)."""
    num, den = (terms @ weights).tolist()
    return [n / d if d > 0 else float("nan") for n, d in zip(num, den, strict=True)]


def field_scores(recent: Sketch, reference: Sketch, spec: SketchSpec) -> list[FieldScore]:
    """Every field's score ``s_j`` (and top categories), highest first; [] when a side is too small.

    Raises :class:`~sketch_store.errors.SpecMismatchError` when the sketches are not of ``spec``.
    """
    if recent.count < MIN_RECORDS or reference.count < MIN_RECORDS:
        return []
    if recent.fingerprint != reference.fingerprint:
        raise SpecMismatchError(f"sketches of two specs ({recent.fingerprint} vs {reference.fingerprint})")
    fw = field_weights(spec, recent.fingerprint)
    terms = frequency_terms(recent, reference)
    scores = weighted_ratio(fw.weights, terms)
    out = [FieldScore(name, score, top_categories(fw, j, terms))
           for j, (name, score) in enumerate(zip(fw.names, scores, strict=True)) if math.isfinite(score)]
    out.sort(key=lambda f: f.score, reverse=True)
    return out


def top_categories(fw: FieldWeights, field: int, terms: np.ndarray) -> list[tuple[str, float]]:
    """The :data:`TOP_CATEGORIES` highest per-category scores of a category field ([] for any other field)."""
    if field not in fw.categories:
        return []
    names, weights = fw.categories[field]
    scored = [(name, s) for name, s in zip(names, weighted_ratio(weights, terms), strict=True) if math.isfinite(s)]
    return sorted(scored, key=lambda c: c[1], reverse=True)[:TOP_CATEGORIES]
