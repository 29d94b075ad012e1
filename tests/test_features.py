"""Feature maps: NumPy (ingestion) vs PyTorch (training), unit norm, chunk/batch invariance, gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sketch_store.errors import DataError
from sketch_store.features import FeatureMap, validate_rows
from sketch_store.spec import SketchSpec
from sketch_store.torch_features import TorchFeatureMap


def make_spec(d: int, m: int = 128, seed: int = 0, law: str = "adapted-radius") -> SketchSpec:
    rng = np.random.default_rng(100 + d)
    return SketchSpec.create(
        d=d,
        m=m,
        law=law,
        sigma=float(np.sqrt(d)) / 2.0,
        mean=rng.normal(scale=3.0, size=d),
        std=rng.uniform(0.2, 5.0, size=d),
        seed=seed,
    )


def data_for(spec: SketchSpec, n: int, seed: int = 1) -> np.ndarray:
    """Rows in the spec's original units: standardised values ~N(0, I)."""
    return spec.unstandardize(np.random.default_rng(seed).normal(size=(n, spec.d)))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


# -- NumPy vs PyTorch ---------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 64])
def test_numpy_transform_matches_torch_forward(d):
    spec = make_spec(d)
    x = data_for(spec, 300)
    numpy_features = FeatureMap(spec).transform(x)
    y = torch.tensor(spec.standardize(x), dtype=torch.float32)
    torch_features = TorchFeatureMap(spec)(y).numpy().astype(np.float64)
    assert numpy_features.shape == torch_features.shape == (300, 2 * spec.m)
    assert np.max(np.abs(numpy_features - torch_features)) < 1e-5


@pytest.mark.parametrize("d", [2, 64])
def test_numpy_feature_mean_matches_torch_batch_sketch(d):
    spec = make_spec(d)
    x = data_for(spec, 1000, seed=2)
    total, n = FeatureMap(spec).feature_sum(x)
    assert n == 1000
    y = torch.tensor(spec.standardize(x), dtype=torch.float32)
    z = TorchFeatureMap(spec).batch_sketch(y).numpy().astype(np.float64)
    assert np.max(np.abs(total / n - z)) < 1e-5


@pytest.mark.parametrize("d", [2, 64])
def test_batch_sketch_with_grad_path_matches_no_grad_path(d):
    spec = make_spec(d)
    y = torch.tensor(spec.standardize(data_for(spec, 200, seed=3)), dtype=torch.float32)
    fmap = TorchFeatureMap(spec)
    with torch.no_grad():
        plain = fmap.batch_sketch(y)
    tracked = fmap.batch_sketch(y.clone().requires_grad_())
    assert torch.allclose(plain, tracked.detach(), atol=1e-7, rtol=0)
    assert torch.allclose(plain, fmap(y).mean(0), atol=1e-6, rtol=0)


def test_transform_rows_sum_to_feature_sum():
    spec = make_spec(3, m=64)
    x = data_for(spec, 50)
    fmap = FeatureMap(spec)
    total, _ = fmap.feature_sum(x)
    assert rel_err(fmap.transform(x).sum(axis=0), total) < 1e-12


def test_features_at_the_mean_are_cos_one_sin_zero():
    spec = make_spec(4, m=32)
    total, n = FeatureMap(spec).feature_sum(np.tile(spec.mean, (5, 1)))
    assert n == 5
    assert np.allclose(total[:32], 5.0 / np.sqrt(32), rtol=0, atol=1e-12)
    assert np.allclose(total[32:], 0.0, atol=1e-12)


def test_features_use_the_standardisation():
    spec = make_spec(2, m=16)
    x = data_for(spec, 10)
    phases = spec.standardize(x) @ spec.omega
    expected = np.concatenate([np.cos(phases), np.sin(phases)], axis=1) / 4.0
    assert np.max(np.abs(FeatureMap(spec).transform(x) - expected)) < 1e-6


# -- unit norm ---------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 64])
def test_unit_norm_per_row(d):
    spec = make_spec(d, m=50)
    x = data_for(spec, 100) * 10.0  # far-out rows too
    feats = FeatureMap(spec).transform(x)
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=0, atol=1e-6)
    y = torch.tensor(spec.standardize(x), dtype=torch.float64)
    tfeats = TorchFeatureMap(spec, dtype=torch.float64)(y)
    assert torch.allclose(torch.linalg.vector_norm(tfeats, dim=1), torch.ones(100, dtype=torch.float64), atol=1e-12)


# -- chunking and batching invariance ---------------------------------------------


@pytest.mark.parametrize("d", [2, 64])
def test_chunking_invariance(d):
    spec = make_spec(d)
    x = data_for(spec, 257, seed=4)
    default, n = FeatureMap(spec).feature_sum(x)
    chunked, n7 = FeatureMap(spec, chunk_rows=7).feature_sum(x)
    one, n1 = FeatureMap(spec, chunk_rows=1).feature_sum(x)
    assert n == n7 == n1 == 257
    assert rel_err(chunked, default) < 1e-12
    assert rel_err(one, default) < 1e-12


@pytest.mark.parametrize("d", [2, 64])
def test_batch_invariance_one_record_at_a_time(d):
    spec = make_spec(d, m=200)
    x = data_for(spec, 400, seed=5)
    fmap = FeatureMap(spec)
    whole, n = fmap.feature_sum(x)
    one_by_one = np.zeros_like(whole)
    count = 0
    for row in x:
        part, k = fmap.feature_sum(row)  # a 1-D row is one record
        one_by_one += part
        count += k
    assert count == n == 400
    assert rel_err(one_by_one, whole) < 1e-12


def test_batch_invariance_any_split():
    spec = make_spec(5, m=100)
    x = data_for(spec, 600, seed=6)
    fmap = FeatureMap(spec)
    whole, _ = fmap.feature_sum(x)
    cuts = [0, 1, 17, 18, 250, 599, 600]
    parts = sum(fmap.feature_sum(x[a:b])[0] for a, b in itertools.pairwise(cuts))
    assert rel_err(parts, whole) < 1e-12


def test_batch_invariance_under_cancellation():
    # Frequencies nearly orthogonal to the data: phases are small differences of large products, so the
    # float64 rounding of the matmul (which BLAS may do differently for one row and for many) decides the
    # float32 phase far more often than with typical data. Even then the sum stays within the 1e-9 that
    # exactly-once ingestion is held to.
    rng = np.random.default_rng(0)
    m = 256
    c = rng.uniform(0.5, 2.0, size=m)
    omega = np.stack([c, -c + rng.uniform(0.5, 2.0, size=m) * 1e-6])
    spec = SketchSpec(d=2, m=m, law="gaussian", sigma=np.array(1.0), mean=np.zeros(2), std=np.ones(2), omega=omega)
    a = rng.uniform(0.5e6, 2e6, size=64)
    x = np.stack([a, a + rng.uniform(-1.0, 1.0, size=64)], axis=1)
    fmap = FeatureMap(spec)
    whole, _ = fmap.feature_sum(x)
    one_by_one = sum(fmap.feature_sum(row)[0] for row in x)
    assert rel_err(one_by_one, whole) < 1e-9


def test_empty_input():
    spec = make_spec(3, m=8)
    total, n = FeatureMap(spec).feature_sum(np.zeros((0, 3)))
    assert n == 0
    assert total.shape == (16,) and not total.any()


# -- gradients --------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 64])
def test_batch_sketch_gradient_matches_autograd(d):
    spec = make_spec(d, m=96)
    fmap = TorchFeatureMap(spec).double()
    assert fmap.omega.dtype == torch.float64
    gen = torch.Generator().manual_seed(d)
    y0 = torch.randn(150, d, generator=gen, dtype=torch.float64)
    weights = torch.randn(2 * spec.m, generator=gen, dtype=torch.float64)

    y1 = y0.clone().requires_grad_()
    z1 = fmap.batch_sketch(y1)
    (z1 * weights).sum().backward()

    y2 = y0.clone().requires_grad_()
    z2 = fmap(y2).mean(0)
    (z2 * weights).sum().backward()

    assert torch.allclose(z1, z2, atol=1e-12, rtol=0)
    assert y1.grad is not None and y2.grad is not None
    assert float(y2.grad.abs().max()) > 1e-6  # a non-trivial gradient
    assert torch.allclose(y1.grad, y2.grad, atol=1e-5, rtol=0)
    assert float((y1.grad - y2.grad).abs().max()) < 1e-10


def test_batch_sketch_gradient_of_squared_loss_matches_autograd():
    spec = make_spec(3, m=40)
    fmap = TorchFeatureMap(spec).double()
    target = torch.rand(80, dtype=torch.float64)
    y0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ya = y0.clone().requires_grad_()
    torch.sum((target - fmap.batch_sketch(ya)) ** 2).backward()
    yb = y0.clone().requires_grad_()
    torch.sum((target - fmap(yb).mean(0)) ** 2).backward()
    assert torch.allclose(ya.grad, yb.grad, atol=1e-12, rtol=1e-9)


def test_batch_sketch_passes_gradcheck():
    spec = make_spec(2, m=6)

    def fresh_batch_sketch(y: torch.Tensor) -> torch.Tensor:
        # gradcheck runs forward passes between a forward and its backward: use a fresh workspace each time.
        return TorchFeatureMap(spec).double().batch_sketch(y)

    y = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(fresh_batch_sketch, (y,), eps=1e-6, atol=1e-6)


def test_stale_buffer_guard():
    spec = make_spec(2, m=16)
    fmap = TorchFeatureMap(spec)
    gen = torch.Generator().manual_seed(3)
    y1 = torch.randn(32, 2, generator=gen).requires_grad_()
    y2 = torch.randn(32, 2, generator=gen).requires_grad_()
    z1 = fmap.batch_sketch(y1)
    fmap.batch_sketch(y2)  # overwrites the shared work buffers
    with pytest.raises(RuntimeError, match="reused by another forward pass"):
        z1.sum().backward()


def test_sequential_forward_backward_reuses_buffers_correctly():
    spec = make_spec(2, m=16)
    fmap = TorchFeatureMap(spec).double()
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        y = torch.randn(32, 2, generator=gen, dtype=torch.float64)
        ya, yb = y.clone().requires_grad_(), y.clone().requires_grad_()
        fmap.batch_sketch(ya).sum().backward()
        fmap(yb).mean(0).sum().backward()
        assert torch.allclose(ya.grad, yb.grad, atol=1e-12)


def test_no_grad_call_between_forward_and_backward_is_harmless():
    spec = make_spec(2, m=16)
    fmap = TorchFeatureMap(spec).double()
    gen = torch.Generator().manual_seed(5)
    y = torch.randn(32, 2, generator=gen, dtype=torch.float64)
    ya, yb = y.clone().requires_grad_(), y.clone().requires_grad_()
    z = fmap.batch_sketch(ya)
    with torch.no_grad():
        fmap.batch_sketch(torch.randn(32, 2, generator=gen, dtype=torch.float64))
    z.sum().backward()
    fmap(yb).mean(0).sum().backward()
    assert torch.allclose(ya.grad, yb.grad, atol=1e-12)


def test_torch_radii_buffer():
    spec = make_spec(3, m=20)
    fmap = TorchFeatureMap(spec, dtype=torch.float64)
    assert np.allclose(fmap.radii.numpy(), np.linalg.norm(spec.omega, axis=0), rtol=1e-14)


# -- validate_rows ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_validate_rows_rejects_non_finite(bad):
    x = np.ones((4, 3))
    x[2, 1] = bad
    with pytest.raises(DataError, match="NaN or Inf in 1 row"):
        validate_rows(x, 3)


@pytest.mark.parametrize("shape", [(4, 2), (4, 4), (2,), (2, 3, 3), ()])
def test_validate_rows_rejects_wrong_dimension(shape):
    with pytest.raises(DataError, match="dimension 3"):
        validate_rows(np.zeros(shape), 3)


def test_validate_rows_rejects_non_numeric():
    with pytest.raises(DataError, match="not numeric"):
        validate_rows([["a", "b"]], 2)


def test_validate_rows_accepts_single_row_and_lists():
    assert validate_rows([1.0, 2.0], 2).shape == (1, 2)
    out = validate_rows([[1, 2], [3, 4]], 2)
    assert out.dtype == np.float64 and out.shape == (2, 2)


def test_feature_sum_validates_input():
    spec = make_spec(3, m=8)
    with pytest.raises(DataError):
        FeatureMap(spec).feature_sum(np.full((2, 3), np.nan))
    with pytest.raises(DataError):
        FeatureMap(spec).feature_sum(np.zeros((2, 4)))
