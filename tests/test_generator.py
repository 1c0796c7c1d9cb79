"""The generators of keep masks and of noise: exact guarantees and statistical quality.

One Threefry-2x32 block serves four neighbouring units of a mask along the
last axis, 16 bits each; each sample of noise has a block of its own
(``dropoutx.keep_mask``'s docstring and ``dropoutx._random`` have the
definitions, and ``tests/test_core.py`` checks both against a numpy
reference). These tests look for what sharing a block, or neighbouring
counters, could break.

Exact properties get exact tests. Each statistical check compares a statistic
with its distribution when the units are independent: Bernoulli(keep) draws,
``keep = 1 - round(rate * 2**16) / 2**16`` (the generator's own keep
probability), or standard normal samples. It fails beyond 5 standard errors:
a two-sided normal tail of 5.7e-7 per check. A chi-square check fails below a
p-value of 1e-6. The test with the most checks makes 256 (64 offsets, 2 axes,
and 2 shapes of masks or both samples and squares of noise), so a correct
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


def _assert_groups_take_their_states(
    layouts: dict[str, np.ndarray], size: int, probabilities: np.ndarray
) -> None:
    """A chi-square test of the joint states of ``size`` neighbours along each layout's rows.

    ``layouts`` holds 0/1 units, their rows cut into groups of ``size``;
    ``probabilities`` is each of the ``2**size`` states' probability under
    independence (bit ``i`` of a state is the group's unit ``i``).
    """
    for layout, units in layouts.items():
        usable = units.shape[1] - units.shape[1] % size
        codes = units[:, :usable].reshape(-1, size) @ (1 << np.arange(size))
        observed = np.bincount(codes, minlength=2**size)
        expected = probabilities * len(codes)
        assert expected.min() >= 5, "too few groups for the chi-square approximation"
        p_value = stats.chisquare(observed, expected).pvalue
        assert p_value > 1e-6, f"{layout}: groups of {size}, p = {p_value}"


def _assert_pairwise_uncorrelated(values: np.ndarray, what: str) -> None:
    """Every two of ``values``'s leading entries are uncorrelated."""
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            _assert_uncorrelated(values[i], values[j], f"{what} {i} and {j}")


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
    ones = np.array([bin(state).count("1") for state in range(2**size)])
    probabilities = keep**ones * (1 - keep) ** (size - ones)
    layouts = {"last axis": mask, "last axis, from 2": mask[:, 2:], "first axis": mask.T}
    _assert_groups_take_their_states(layouts, size, probabilities)


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
    _assert_pairwise_uncorrelated(_standardised(masks, 0.5), "vmapped keys")


# --- noise -----------------------------------------------------------------------------
#
# A power of two, and odd rows of a length that is not.
NOISE_SHAPES = [(1024, 1024), (1000, 999)]


def _noise(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(_random.standard_normal(key, shape), np.float64)


def _squares(z: np.ndarray) -> np.ndarray:
    """``(z**2 - 1) / sqrt(2)``: mean 0 and variance 1 for a standard normal ``z``.

    A dependence between the radii of two samples would show in their
    squares, not in the samples themselves.
    """
    return (z * z - 1) / math.sqrt(2)


@pytest.mark.parametrize("shape", NOISE_SHAPES)
def test_noise_has_the_moments_and_tail_of_a_standard_normal(shape: tuple[int, ...]) -> None:
    """Mean, variance and fourth moment, and the counts beyond 3 and 4 sigma."""
    z = _noise(KEY, shape)
    n = z.size
    _assert_near(float(z.mean()), 0.0, 1 / math.sqrt(n), "mean")
    _assert_near(float(np.mean(z * z)), 1.0, math.sqrt(2 / n), "variance")
    # z**4 has mean 3 and variance 105 - 9 = 96.
    _assert_near(float(np.mean(z**4)), 3.0, math.sqrt(96 / n), "fourth moment")
    for bound in (3.0, 4.0):
        p = 2 * stats.norm.sf(bound)
        beyond = float(np.mean(np.abs(z) > bound))
        _assert_near(beyond, p, math.sqrt(p * (1 - p) / n), f"fraction beyond {bound}")


@pytest.mark.parametrize("shape", NOISE_SHAPES)
def test_neighbouring_samples_are_jointly_independent(shape: tuple[int, ...]) -> None:
    z = _noise(KEY, shape)
    usable = shape[1] - shape[1] % 2
    first, second = z[:, 0:usable:2], z[:, 1:usable:2]
    _assert_uncorrelated(first, second, "samples")
    _assert_uncorrelated(_squares(first), _squares(second), "squares")
    # Their joint quadrant, and their joint quartiles: 4 and 16 equally likely states.
    for edges in ([0.0], list(stats.norm.ppf([0.25, 0.5, 0.75]))):
        states = len(edges) + 1
        codes = np.digitize(first, edges) * states + np.digitize(second, edges)
        observed = np.bincount(codes.ravel(), minlength=states**2)
        p_value = stats.chisquare(observed).pvalue
        assert p_value > 1e-6, f"{states} bins: p = {p_value}"


@pytest.mark.parametrize("shape", NOISE_SHAPES)
def test_noise_neighbours_are_uncorrelated_at_offsets_1_to_64_along_each_axis(
    shape: tuple[int, ...],
) -> None:
    z = _noise(KEY, shape)
    for name, values in {"samples": z, "squares": _squares(z)}.items():
        for offset in range(1, 65):
            a, b = values[:, :-offset], values[:, offset:]
            _assert_uncorrelated(a, b, f"{name}, offset {offset} along axis 1")
            _assert_uncorrelated(values[:-offset], values[offset:], f"{name}, offset {offset}")


@pytest.mark.parametrize("shape", NOISE_SHAPES)
@pytest.mark.parametrize("size", [4, 8])
def test_groups_of_noise_neighbours_take_every_sign_pattern_equally(
    shape: tuple[int, ...], size: int
) -> None:
    """A chi-square test of the ``2**size`` sign patterns of ``size`` neighbours.

    Groups run along the last axis, from columns 0 and 1, and along the first
    axis.
    """
    signs = (_noise(KEY, shape) > 0).astype(np.int64)
    layouts = {"last axis": signs, "last axis, from 1": signs[:, 1:], "first axis": signs.T}
    _assert_groups_take_their_states(layouts, size, np.full(2**size, 2.0**-size))


def test_noise_of_related_keys_is_independent() -> None:
    """Same positions, and positions one row or one column apart (see the mask test)."""
    shape = NOISE_SHAPES[1]
    for name, (key_a, key_b) in _key_pairs().items():
        a, b = _noise(key_a, shape), _noise(key_b, shape)
        for what, (x, y) in {"samples": (a, b), "squares": (_squares(a), _squares(b))}.items():
            _assert_uncorrelated(x, y, f"{name}, {what}")
            _assert_uncorrelated(x[1:], y[:-1], f"{name}, {what}, one row apart")
            _assert_uncorrelated(x[:, 1:], y[:, :-1], f"{name}, {what}, one column apart")


def test_vmapped_keys_give_independent_noise() -> None:
    keys = jax.random.split(KEY, 8)
    x = jnp.zeros((512, 512))
    noise = jax.vmap(lambda key: dx.gaussian_noise(key, x, 1.0))(keys)
    for key, values in zip(keys, noise, strict=True):  # vmap changes nothing
        np.testing.assert_array_equal(values, dx.gaussian_noise(key, x, 1.0))
    _assert_pairwise_uncorrelated(np.asarray(noise, np.float64), "vmapped keys")


@pytest.mark.parametrize("shape", NOISE_SHAPES)
def test_gaussian_dropout_is_unbiased(shape: tuple[int, ...]) -> None:
    """``E[y] = x``: y = x (1 + sigma z) has mean x and standard error x sigma / sqrt(n)."""
    rate = 0.3
    sigma = math.sqrt(rate / (1 - rate))
    y = dx.gaussian_dropout(KEY, jnp.full(shape, 2.0), rate)
    _assert_near(float(y.mean()), 2.0, 2.0 * sigma / math.sqrt(math.prod(shape)), "mean")
