"""Training from a sketch: loss decrease, budgets, targets, schedules and the minibatch floor."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
import torch

from learner.generator import Generator, GeneratorConfig, parse_hidden
from learner.loss import minibatch_floor, sketch_loss, smoothing_weights
from learner.trainer import TrainConfig, Trainer
from sketch_store.errors import SketchgenError, SpecMismatchError
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec
from sketch_store.torch_features import TorchFeatureMap

GCONF = GeneratorConfig(latent=4, hidden=(32, 32), output=2)


def make_spec(m: int = 200, seed: int = 0) -> SketchSpec:
    return SketchSpec.create(d=2, m=m, law="gaussian", sigma=1.0, seed=seed)


def gaussian_target(spec: SketchSpec, n: int = 5000, seed: int = 0) -> Sketch:
    x = np.random.default_rng(seed).normal(loc=[1.5, -1.0], scale=0.5, size=(n, 2))
    return Sketch.from_data(spec, x)


def test_training_lowers_the_loss():
    spec = make_spec()
    trainer = Trainer(spec, GCONF, TrainConfig(batch=256, lr=1e-2, seed=0))
    trainer.set_target(gaussian_target(spec))
    losses: list[float] = []
    result = trainer.train(steps=200, callback=lambda step, value: losses.append(value.corrected))
    assert result.steps == 200 and trainer.steps == 200 and len(losses) == 200
    initial = float(np.mean(losses[:10]))
    assert initial > 0.05
    assert result.corrected_loss < initial / 10
    assert result.corrected_loss == pytest.approx(result.loss - result.floor)
    assert 0 < result.floor < 1.0 / 256
    # the learned samples moved to the target's location
    samples = trainer.sample(4000, seed=0)
    assert np.allclose(samples.mean(axis=0), [1.5, -1.0], atol=0.25)


def test_training_is_deterministic_for_a_seed():
    spec = make_spec(m=32)
    target = gaussian_target(spec, n=500)
    outs = []
    for _ in range(2):
        trainer = Trainer(spec, GCONF, TrainConfig(batch=64, lr=1e-2, seed=5))
        trainer.set_target(target)
        trainer.train(steps=15)
        outs.append(trainer.sample(20, seed=1))
    assert np.array_equal(outs[0], outs[1])


def test_warm_start_accumulates_steps():
    spec = make_spec(m=32)
    trainer = Trainer(spec, GCONF, TrainConfig(batch=32, seed=0))
    trainer.set_target(gaussian_target(spec, n=200))
    assert trainer.train(steps=3).steps == 3
    assert trainer.train(steps=4).steps == 4
    assert trainer.steps == 7


def test_time_budget_is_respected():
    spec = make_spec(m=32)
    trainer = Trainer(spec, GCONF, TrainConfig(batch=64, seed=0))
    trainer.set_target(gaussian_target(spec, n=200))
    start = time.perf_counter()
    result = trainer.train(seconds=0.3)
    wall = time.perf_counter() - start
    assert result.steps >= 1
    assert 0.3 <= result.seconds < 5.0
    assert wall < 10.0


def test_step_budget_stops_before_time_budget():
    spec = make_spec(m=32)
    trainer = Trainer(spec, GCONF, TrainConfig(batch=32, seed=0))
    trainer.set_target(gaussian_target(spec, n=200))
    result = trainer.train(steps=5, seconds=60.0)
    assert result.steps == 5 and result.seconds < 30.0


def test_train_without_budget_raises():
    spec = make_spec(m=16)
    trainer = Trainer(spec, GCONF, TrainConfig(batch=16, seed=0))
    trainer.set_target(gaussian_target(spec, n=100))
    with pytest.raises(SketchgenError, match="budget"):
        trainer.train()


def test_step_without_target_raises():
    trainer = Trainer(make_spec(m=16), GCONF, TrainConfig(batch=16, seed=0))
    with pytest.raises(SketchgenError, match="no target"):
        trainer.train(steps=1)


def test_set_target_of_other_spec_raises():
    spec = make_spec(m=16, seed=0)
    trainer = Trainer(spec, GCONF, TrainConfig(batch=16, seed=0))
    other = make_spec(m=16, seed=1)
    with pytest.raises(SpecMismatchError, match="does not match"):
        trainer.set_target(gaussian_target(other, n=100))
    assert trainer.target is None


def test_set_target_replaces_target_and_keeps_weights():
    spec = make_spec(m=16)
    trainer = Trainer(spec, GCONF, TrainConfig(batch=16, seed=0))
    trainer.set_target(gaussian_target(spec, n=100, seed=0))
    trainer.train(steps=2)
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    new = gaussian_target(spec, n=300, seed=1)
    trainer.set_target(new)
    assert trainer.target is new
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.generator.parameters(), strict=True))


def test_generator_output_must_match_dimension():
    with pytest.raises(SpecMismatchError):
        Trainer(make_spec(m=8), GeneratorConfig(latent=2, hidden=(4,), output=3))


def test_sample_is_reproducible_and_in_original_units():
    spec = SketchSpec.create(d=2, m=16, law="gaussian", mean=np.array([50.0, -50.0]), std=np.array([2.0, 3.0]), seed=0)
    trainer = Trainer(spec, GCONF, TrainConfig(batch=16, seed=0))
    a, b = trainer.sample(100, seed=7), trainer.sample(100, seed=7)
    assert a.shape == (100, 2) and a.dtype == np.float64
    assert np.array_equal(a, b)
    y = trainer.generator.sample(100, generator=torch.Generator().manual_seed(7)).numpy().astype(np.float64)
    assert np.allclose(a, y * [2.0, 3.0] + [50.0, -50.0], rtol=0, atol=1e-12)


# -- schedules ---------------------------------------------------------------------


def test_lr_schedule_annealed():
    config = TrainConfig(lr=3e-3, anneal=True, final_lr_fraction=0.05)
    assert config.lr_at(0.0) == pytest.approx(3e-3)
    assert config.lr_at(1.0) == pytest.approx(3e-3 * 0.05)
    assert config.lr_at(0.5) == pytest.approx(3e-3 * (0.05 + 0.95 * 0.5))
    values = [config.lr_at(p) for p in np.linspace(0, 1, 21)]
    assert all(a > b for a, b in itertools.pairwise(values))
    assert config.lr_at(-1.0) == config.lr_at(0.0) and config.lr_at(2.0) == config.lr_at(1.0)


def test_lr_schedule_constant_without_anneal():
    config = TrainConfig(lr=3e-3, anneal=False)
    assert {config.lr_at(p) for p in (0.0, 0.3, 1.0)} == {3e-3}
    assert config.tau_at(0.0) == 0.0


def test_smoothing_schedule():
    config = TrainConfig(anneal=True, smooth_tau=2.0, smooth_fraction=0.4)
    assert config.tau_at(0.0) == pytest.approx(2.0)
    assert config.tau_at(0.2) == pytest.approx(1.0)
    assert config.tau_at(0.4) == 0.0 and config.tau_at(0.9) == 0.0


def annealed_trainer(m: int, n: int, **settings: object) -> tuple[TrainConfig, Trainer]:
    """An annealed trainer (lr 1e-2, seed 0, ``settings``) on the sketch of ``n`` Gaussian rows at ``m`` frequencies."""
    spec = make_spec(m=m)
    config = TrainConfig(lr=1e-2, seed=0, anneal=True, **settings)
    trainer = Trainer(spec, GCONF, config)
    trainer.set_target(gaussian_target(spec, n=n))
    return config, trainer


def test_annealed_training_follows_the_schedule():
    config, trainer = annealed_trainer(16, 100, batch=16, final_lr_fraction=0.1)
    lrs: list[float] = []
    trainer.train(steps=10, callback=lambda step, value: lrs.append(trainer.optimizer.param_groups[0]["lr"]))
    assert lrs[0] == pytest.approx(1e-2)
    assert lrs == pytest.approx([config.lr_at(k / 10) for k in range(10)])


def test_batch_schedule_grows_linearly_and_only_when_annealing():
    config = TrainConfig(batch=100, anneal=True, batch_start=0.25)
    assert [config.batch_at(p) for p in (0.0, 0.5, 1.0, 2.0)] == [25, 62, 100, 100]
    assert TrainConfig(batch=100, anneal=False, batch_start=0.25).batch_at(0.0) == 100
    assert TrainConfig(batch=100, anneal=True).batch_at(0.0) == 100
    assert TrainConfig(batch=4, anneal=True, batch_start=0.01).batch_at(0.0) == 2


def test_a_growing_batch_trains_with_one_buffer():
    config, trainer = annealed_trainer(32, 1000, batch=400, batch_start=0.25)
    sizes: list[int] = []
    trainer.generator.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    losses: list[float] = []
    trainer.train(steps=40, callback=lambda step, value: losses.append(value.corrected))
    assert sizes == [config.batch_at(k / 40) for k in range(40)] and sizes[0] == 100 and sizes[-1] == 392
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    workspace = trainer.fmap._workspace
    assert workspace.cos is not None and workspace.cos.shape == (400, 32)  # reserved for the largest batch, kept
    # a smaller batch after a larger one: the gradient through the reused buffer equals a fresh one's
    y = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), requires_grad=True)
    trainer.fmap.batch_sketch(y).pow(2).sum().backward()
    fresh = y.detach().clone().requires_grad_(True)
    TorchFeatureMap(trainer.spec).batch_sketch(fresh).pow(2).sum().backward()
    assert torch.equal(y.grad, fresh.grad)


@pytest.mark.parametrize(
    "kwargs", [dict(batch=1), dict(lr=0.0), dict(lr=-1.0), dict(final_lr_fraction=1.5), dict(final_lr_fraction=-0.1),
               dict(batch_start=0.0), dict(batch_start=1.5)]
)
def test_train_config_validation(kwargs):
    with pytest.raises(SketchgenError):
        TrainConfig(**kwargs)


# -- loss and its floor ---------------------------------------------------------------


def test_loss_minus_floor_is_near_zero_for_the_data_law():
    spec = make_spec(m=200, seed=3)
    fmap = TorchFeatureMap(spec)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z_data = fmap.batch_sketch(torch.randn(200_000, 2, generator=gen))
        same = [sketch_loss(fmap, z_data, torch.randn(500, 2, generator=gen)) for _ in range(300)]
        shifted = [sketch_loss(fmap, z_data, torch.randn(500, 2, generator=gen) + 0.5) for _ in range(20)]
    loss = np.mean([v.loss for v in same])
    corrected = np.mean([v.corrected for v in same])
    assert loss > 0
    assert abs(corrected) < 0.1 * loss
    # the floor is (1 − ‖z_G‖²)/n; for N(0, I), |E exp(iωᵀy)|² = exp(−‖ω‖²), so ‖z_G‖² = mean_j exp(−‖ω_j‖²)
    zg2 = float(np.mean(np.exp(-np.sum(spec.omega**2, axis=0))))
    assert np.mean([v.floor for v in same]) == pytest.approx((1 - zg2) / 500, rel=0.02)
    # for another law the corrected loss is most of the loss
    assert np.mean([v.corrected for v in shifted]) > 0.5 * np.mean([v.loss for v in shifted])


def test_minibatch_floor_formula():
    z = torch.tensor([0.3, 0.4])  # ‖ẑ‖² = 0.25
    n = 10
    zg2 = (n * 0.25 - 1) / (n - 1)
    assert minibatch_floor(z, n) == pytest.approx((1 - zg2) / n)
    assert minibatch_floor(z, 1) == 0.0
    assert minibatch_floor(torch.zeros(4), 100) == pytest.approx(1 / 100)  # clipped at ‖z_G‖² = 0
    assert minibatch_floor(torch.tensor([1.0, 0.0]), 100) == 0.0  # clipped at ‖z_G‖² = 1


def test_weighted_objective_and_unweighted_loss():
    spec = make_spec(m=20)
    fmap = TorchFeatureMap(spec)
    y = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    z = torch.zeros(40)
    plain = sketch_loss(fmap, z, y)
    w = smoothing_weights(fmap, 1.0)
    weighted = sketch_loss(fmap, z, y, weights=w)
    assert weighted.loss == pytest.approx(plain.loss)
    assert float(weighted.objective) < float(plain.objective)
    assert torch.allclose(w[:20], torch.exp(-0.5 * fmap.radii**2)) and torch.equal(w[:20], w[20:])
    assert torch.equal(smoothing_weights(fmap, 0.0), torch.ones(40))
    assert plain.unsquared == pytest.approx(math.sqrt(plain.loss))


# -- generator ----------------------------------------------------------------------


def test_generator_architecture_and_config_round_trip():
    config = GeneratorConfig(latent=3, hidden=(5, 7), output=2, slope=0.1)
    assert GeneratorConfig.from_dict(config.to_dict()) == config
    gen = Generator(config)
    linears = [m for m in gen.net if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(3, 5), (5, 7), (7, 2)]
    assert gen.sample(6, generator=torch.Generator().manual_seed(0)).shape == (6, 2)


@pytest.mark.parametrize(
    "kwargs", [dict(latent=0), dict(output=0), dict(hidden=(4, 0)), dict(slope=1.0), dict(slope=-0.1)]
)
def test_generator_config_validation(kwargs):
    with pytest.raises(SketchgenError):
        GeneratorConfig(**kwargs)


def test_generator_config_from_bad_dict():
    with pytest.raises(SketchgenError):
        GeneratorConfig.from_dict({"latent": 2})


def test_parse_hidden():
    assert parse_hidden("128,64") == (128, 64)
    assert parse_hidden("") == ()
    assert parse_hidden(" 8 , 8 ") == (8, 8)
    with pytest.raises(SketchgenError, match="--hidden"):
        parse_hidden("8,x")


def test_the_weight_average_follows_its_formula_and_is_what_samples_come_from():
    spec = make_spec()
    trainer = Trainer(spec, GCONF, TrainConfig(batch=64, lr=1e-2, seed=0, ema_decay=0.9))
    trainer.set_target(gaussian_target(spec))
    trainer.train(steps=1)  # the first step copies the weights
    avg = [p.detach().clone() for p in trainer.ema.module.parameters()]
    assert all(torch.equal(a, p) for a, p in zip(avg, trainer.generator.parameters(), strict=True))
    trainer.train(steps=1)  # then θ̄ ← 0.9 θ̄ + 0.1 θ
    for a, new, raw in zip(avg, trainer.ema.module.parameters(), trainer.generator.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * a + 0.1 * raw.detach())
    assert trainer.served_generator is trainer.ema.module
    torch.manual_seed(0)
    u = torch.randn(5, GCONF.latent)
    expected = spec.unstandardize(trainer.ema.module(u).detach().numpy().astype(np.float64))
    gen = torch.Generator()
    gen.manual_seed(3)
    got = trainer.sample(5, seed=3)
    gen.manual_seed(3)
    assert np.allclose(got, spec.unstandardize(trainer.ema.module.sample(5, generator=gen).numpy()), atol=1e-6)
    assert not np.allclose(got, spec.unstandardize(trainer.generator.sample(5, generator=gen).numpy()))
    assert expected.shape == (5, 2)


def test_without_a_weight_average_samples_come_from_the_raw_generator():
    trainer = Trainer(make_spec(), GCONF, TrainConfig(batch=16, seed=0))
    assert trainer.ema is None and trainer.served_generator is trainer.generator


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_ema_decay_outside_0_1_is_refused(decay):
    with pytest.raises(SketchgenError, match="ema_decay"):
        TrainConfig(ema_decay=decay)
