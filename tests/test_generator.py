"""The keep-mask generator: its exact guarantees and its statistical quality.

One Threefry-2x32 block serves four neighbouring units along the last axis,
16 bits each (``dropoutx.keep_mask``'s docstring has the definition, and
``tests/test_core.py`` checks the masks against it bit for bit). These tests
look for what sharing a block could break.

Exact properties get exact tests. Each statistical check compares a statistic
with its distribution when the units are independent Bernoulli(keep) draws,
``keep = 1 - round(rate * 2**16) / 2**16`` (the generator's own keep
probability), and fails beyond 5 standard errors: a two-sided normal tail of
5.7e-7 per check. A chi-square check fails below a p-value of 1e-6. The test
with the most checks makes 256 (64 offsets, 2 axes, 2 shapes), so a correct
generator fails it spuriously with probability below 1.5e-4; the keys are
fixed, so the suite is reproducible.
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

SIGMAS = 5.0
KEY = jax.random.key(2024)
# (1024, 1024) goes through whole packed words, (1000, 1000) through packed
# words of which the last in each row is cut short (1000 is not a multiple of
# 32): both must pass every check. tests/test_core.py holds every path, one
# block per unit included, to the same definition bit for bit.
SHAPES = [(1024, 1024), (1000, 1000)]
RATES = [0.001, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999]


def _keep(rate: float) -> float:
    """The generator's keep probability at ``rate``, exactly."""
    return 1 - float(_random.keep_threshold(jnp.float32(rate))) / 2**16


def _standardised(mask: jax.Array, rate: float) -> np.ndarray:
    """``(mask - keep) / sqrt(keep * (1 - keep))``: mean 0 and variance 1 under independence."""
    keep = _keep(rate)
    return (np.asarray(mask, np.float64) - keep) / math.sqrt(keep * (1 - keep))


_assert_near = functools.partial(assertions.assert_near, sigmas=SIGMAS)


def _assert_uncorrelated(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """The mean product of standardised units, ``N(0, 1 / n)`` when they are independent.

    Products of distinct pairs of independent zero-mean units are uncorrelated,
    even where the pairs overlap, so the variance of the mean is exactly 1 / n.
    """
    _assert_near(float(np.mean(a * b)), 0.0, 1 / math.sqrt(a.size), what)


# --- exact -----------------------------------------------------------------------------


def test_drop_probability_is_within_2_to_the_minus_17_of_the_rate() -> None:
    """``|t / 2**16 - rate| <= 2**-17``, exactly, at 100,003 float32 rates.

    So inverted dropout's bias, ``E[y] / x - 1 = (rate - t / 2**16) / (1 -
    rate)``, is at most ``2**-17 / (1 - rate)`` in size, as the docstrings say.
    """
    rates = np.concatenate(
        [np.linspace(0, 1, 100_001, dtype=np.float32), np.float32([2**-18, 1 - 2**-18])]
    )
    thresholds = np.asarray(_random.keep_threshold(jnp.asarray(rates)), np.float64)
    assert np.all(np.abs(thresholds / 2**16 - rates.astype(np.float64)) <= 2**-17)


def test_masks_of_arrays_beyond_the_counters_fall_back_to_jax_random_bits() -> None:
    """2**32 rows would wrap the row counter: such masks come from ``jax.random.bits``."""

    def primitives(shape: tuple[int, ...]) -> str:
        jaxpr = jax.make_jaxpr(lambda key: _random.draw_keep_mask(key, shape, 0.5, ()))(KEY)
        return str(jaxpr)

    assert "random_bits" in primitives((2**32, 1))
    assert "random_bits" not in primitives((2**20, 2**13))  # 2**33 units, in range


# --- statistical -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_keep_fraction_is_binomial_at_every_rate(shape: tuple[int, ...]) -> None:
    n = math.prod(shape)
    for rate in RATES:
        keep = _keep(rate)
        fraction = float(dx.keep_mask(KEY, shape, rate).mean())
        _assert_near(fraction, keep, math.sqrt(keep * (1 - keep) / n), f"rate {rate}")


@pytest.mark.parametrize("shape", SHAPES)
def test_inverted_dropout_is_unbiased(shape: tuple[int, ...]) -> None:
    for rate in (0.1, 0.5, 0.9):
        keep = _keep(rate)
        y = dx.inverted_dropout(KEY, jnp.ones(shape), rate)
        # y = mask / (1 - rate): mean keep / (1 - rate), variance keep (1 - keep) / (1 - rate)^2.
        standard_error = math.sqrt(keep * (1 - keep) / math.prod(shape)) / (1 - rate)
        _assert_near(float(y.mean()), keep / (1 - rate), standard_error, f"rate {rate}")


@pytest.mark.parametrize("shape", SHAPES)
def test_neighbours_are_uncorrelated_at_offsets_1_to_64_along_each_axis(
    shape: tuple[int, ...],
) -> None:
    z = _standardised(dx.keep_mask(KEY, shape, 0.3), 0.3)
    for offset in range(1, 65):
        _assert_uncorrelated(z[:, :-offset], z[:, offset:], f"offset {offset} along axis 1")
        _assert_uncorrelated(z[:-offset], z[offset:], f"offset {offset} along axis 0")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("size", "rate"), [(4, 0.5), (4, 0.2), (8, 0.5)])
def test_groups_of_neighbours_take_every_joint_state_at_its_probability(
    shape: tuple[int, ...], size: int, rate: float
) -> None:
    """A chi-square test of the ``2**size`` joint states of ``size`` neighbours.

    Groups run along the last axis, aligned with the blocks (start 0) and
    straddling two (start 2), and along the first axis.
    """
    keep = _keep(rate)
    mask = np.asarray(dx.keep_mask(KEY, shape, rate), np.int64)
    states = np.arange(2**size)
    ones = np.array([bin(state).count("1") for state in states])
    probabilities = keep**ones * (1 - keep) ** (size - ones)
    layouts = {
        "last axis": mask,
        "last axis, from 2": mask[:, 2:],
        "first axis": mask.T,
    }
    for layout, units in layouts.items():
        usable = units.shape[1] - units.shape[1] % size
        groups = units[:, :usable].reshape(-1, size)
        codes = groups @ (1 << np.arange(size))
        observed = np.bincount(codes, minlength=2**size)
        expected = probabilities * len(codes)
        assert expected.min() >= 5, "too few groups for the chi-square approximation"
        p_value = stats.chisquare(observed, expected).pvalue
        assert p_value > 1e-6, f"{layout}: groups of {size}, p = {p_value}"


def _key_pairs() -> dict[str, tuple[jax.Array, jax.Array]]:
    """Keys a user derives from one another, which must give independent masks."""
    split = jax.random.split(KEY)
    step_keys = [jax.random.fold_in(KEY, step) for step in (41, 42)]  # successive steps
    carried = jax.random.split(jax.random.split(KEY)[0])  # key, sub = split(key), twice
    return {
        "split": (split[0], split[1]),
        "fold_in 0 and 1": (jax.random.fold_in(KEY, 0), jax.random.fold_in(KEY, 1)),
        "successive steps by fold_in": (step_keys[0], step_keys[1]),
        "successive steps by split": (jax.random.split(KEY)[1], carried[1]),
        "raw keys differing in word 0": (
            jax.random.wrap_key_data(jnp.uint32([1, 7])),
            jax.random.wrap_key_data(jnp.uint32([2, 7])),
        ),
        "raw keys differing in word 1": (
            jax.random.wrap_key_data(jnp.uint32([7, 1])),
            jax.random.wrap_key_data(jnp.uint32([7, 2])),
        ),
    }


@pytest.mark.parametrize("shape", SHAPES)
def test_masks_of_related_keys_are_independent(shape: tuple[int, ...]) -> None:
    """Same positions, and positions one row or one block apart.

    A key's word 0 is added to the row counter and word 1 to the block
    counter, so keys differing by 1 in a word would start the hash from the
    same state at positions one row (or one block of 4) apart; the shifted
    checks look there.
    """
    for name, (key_a, key_b) in _key_pairs().items():
        a = _standardised(dx.keep_mask(key_a, shape, 0.5), 0.5)
        b = _standardised(dx.keep_mask(key_b, shape, 0.5), 0.5)
        _assert_uncorrelated(a, b, name)
        _assert_uncorrelated(a[1:], b[:-1], f"{name}, one row apart")
        _assert_uncorrelated(a[:, 4:], b[:, :-4], f"{name}, one block apart")


def test_vmapped_keys_give_independent_masks() -> None:
    keys = jax.random.split(KEY, 8)
    masks = jax.vmap(lambda key: dx.keep_mask(key, (512, 512), 0.5))(keys)
    for key, mask in zip(keys, masks, strict=True):  # vmap changes nothing
        np.testing.assert_array_equal(mask, dx.keep_mask(key, (512, 512), 0.5))
    z = _standardised(masks, 0.5)
    for i in range(8):
        for j in range(i + 1, 8):
            _assert_uncorrelated(z[i], z[j], f"vmapped keys {i} and {j}")
