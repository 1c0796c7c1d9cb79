"""Statistical properties, each with a stated bound and false-failure rate.

Every check compares a sample statistic with its exact expectation, with a
tolerance of 5 standard errors. For a normal statistic the two-sided tail
beyond 5 sigma is 5.7e-7, so even the test with the most checks (below 20)
fails spuriously less than once in 10^4 runs. The keys are fixed, so the suite
is reproducible; the bounds say how unlucky a key would have to be.
"""

from __future__ import annotations

import functools
import math

import assertions
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import dropoutx as dx
from dropoutx import _random

N = 1_000_000
SIGMAS = 5.0


_assert_near = functools.partial(assertions.assert_near, sigmas=SIGMAS)


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9, 0.99])
def test_keep_fraction_is_binomial(rate: float) -> None:
    mask = dx.keep_mask(jax.random.key(1), (N,), rate)
    keep = 1 - rate
    _assert_near(float(mask.mean()), keep, math.sqrt(keep * rate / N), f"rate={rate}")


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_inverted_dropout_mean_and_variance(rate: float) -> None:
    # y = mask / keep for x = 1: mean 1, variance rate / keep.
    y = dx.inverted_dropout(jax.random.key(2), jnp.ones((N,)), rate)
    keep = 1 - rate
    variance = rate / keep
    _assert_near(float(y.mean()), 1.0, math.sqrt(variance / N), "mean")
    # The second moment about the known mean 1 averages N iid terms (y - 1)^2,
    # whose variance is mu4 - variance^2, with mu4 = rate^4 / keep^3 + rate the
    # fourth central moment of y (zero spread at rate 0.5, where (y - 1)^2 = 1).
    mu4 = rate**4 / keep**3 + rate
    second_moment = float(jnp.mean((y - 1) ** 2))
    _assert_near(second_moment, variance, math.sqrt((mu4 - variance**2) / N), "variance")


@pytest.mark.parametrize("rate", [0.3, 0.6])
def test_vanilla_dropout_mean_matches_inference_rule(rate: float) -> None:
    x = jnp.full((N,), 2.0)
    y = dx.vanilla_dropout(jax.random.key(3), x, rate)
    inference = float(dx.vanilla_dropout(None, x, rate, deterministic=True)[0])
    keep = 1 - rate
    _assert_near(float(y.mean()), inference, 2.0 * math.sqrt(keep * rate / N), "mean")


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_gaussian_dropout_matches_bernoulli_moments(rate: float) -> None:
    y = dx.gaussian_dropout(jax.random.key(4), jnp.ones((N,)), rate)
    variance = rate / (1 - rate)
    _assert_near(float(y.mean()), 1.0, math.sqrt(variance / N), "mean")
    # For normal samples, the sample variance has standard error
    # sigma^2 * sqrt(2 / (N - 1)).
    _assert_near(float(y.var()), variance, variance * math.sqrt(2 / (N - 1)), "variance")


@pytest.mark.parametrize("stddev", [0.1, 1.0, 3.0])
def test_gaussian_noise_moments(stddev: float) -> None:
    x = jnp.full((N,), 5.0)
    y = dx.gaussian_noise(jax.random.key(5), x, stddev) - x
    _assert_near(float(y.mean()), 0.0, stddev / math.sqrt(N), "mean")
    _assert_near(float(y.var()), stddev**2, stddev**2 * math.sqrt(2 / (N - 1)), "variance")


def test_noise_is_standard_normal_by_kolmogorov_smirnov() -> None:
    # Under the null hypothesis the p-value is uniform: P(p < 1e-5) = 1e-5.
    sample = np.asarray(_random.standard_normal(jax.random.key(6), (200_000,)))
    assert stats.kstest(sample, "norm").pvalue > 1e-5


def test_masks_of_different_keys_are_uncorrelated() -> None:
    # Pearson correlation of independent masks has standard error 1 / sqrt(N).
    keys = jax.random.split(jax.random.key(7), 2)
    first, second = (np.asarray(dx.keep_mask(k, (N,), 0.5), np.float64) for k in keys)
    _assert_near(float(np.corrcoef(first, second)[0, 1]), 0.0, 1 / math.sqrt(N), "correlation")


def test_neighbouring_units_are_uncorrelated() -> None:
    mask = np.asarray(dx.keep_mask(jax.random.key(8), (N + 1,), 0.5), np.float64)
    lag1 = float(np.corrcoef(mask[:-1], mask[1:])[0, 1])
    _assert_near(lag1, 0.0, 1 / math.sqrt(N), "lag-1 correlation")


def test_broadcast_mask_has_the_right_keep_fraction() -> None:
    # 1000 x 1000 positions share one value across an axis of length 7.
    mask = dx.keep_mask(jax.random.key(9), (1000, 7, 1000), 0.3, broadcast_dims=(1,))
    reduced = mask[:, 0, :]
    _assert_near(float(reduced.mean()), 0.7, math.sqrt(0.21 / N), "keep fraction")
    assert bool((mask == mask[:, :1, :]).all())


def test_traced_rate_schedule_keep_fraction() -> None:
    # A traced, annealed rate gives the scheduled keep fraction at each step.
    schedule = lambda step: 0.8 * (1 - step / 100)  # noqa: E731
    fn = jax.jit(lambda k, step: dx.annealed_dropout(k, jnp.ones((N,)), step, schedule))
    for step in [0, 50, 90]:
        rate = 0.8 * (1 - step / 100)
        kept = float((fn(jax.random.key(10 + step), jnp.float32(step)) != 0).mean())
        _assert_near(kept, 1 - rate, math.sqrt(rate * (1 - rate) / N), f"step {step}")
