"""DropBlock, zoneout and LayerDrop.

Exact properties are checked exactly: DropBlock against a NumPy reference
built from the documented seeds (``~keep_mask`` at the documented gamma,
expanded block by block), zoneout against ``where(keep_mask, h_new, h_prev)``,
LayerDrop against ``~keep_mask(key, (), rate)``; transformations against the
plain call. Statistical checks allow 6 standard errors (exact ones where they
can be computed, e.g. the variance of DropBlock's dropped fraction from the
pairwise covariances of its units). The two-sided normal tail beyond 6 sigma
is 2.0e-9, so with fewer than 40 such checks here a correct implementation
fails spuriously less than once in 10^7 runs (well under the project's
10^-4). The keys are fixed, so the suite is reproducible.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import assertions
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.test_util import check_grads

import dropoutx as dx

pytestmark = pytest.mark.usefixtures("strict_promotion")

KEY = jax.random.key(2024)
SIGMAS = 6.0
FLOAT_DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32]


def _x(shape: tuple[int, ...], dtype: Any = jnp.float32, seed: int = 7) -> jax.Array:
    """Normal values moved away from 0, so that zeros in an output mark dropped units."""
    z = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
    return (z + jnp.where(z >= 0, 1.0, -1.0)).astype(dtype)


_assert_near = functools.partial(assertions.assert_near, sigmas=SIGMAS)


_raises = assertions.raises


# --- DropBlock: a NumPy reference ------------------------------------------------------


def _spatial_axes(ndim: int, channel_axis: int) -> tuple[int, ...]:
    channel = channel_axis % ndim
    return tuple(axis for axis in range(1, ndim) if axis != channel)


def _gamma(rate: float, spatial_sizes: tuple[int, ...], block_size: int) -> np.float32:
    """The documented seed probability, ``float32(rate) * float32(gamma / rate)``."""
    factor = math.prod(n / (block_size * (n - block_size + 1)) for n in spatial_sizes)
    return np.float32(rate) * np.float32(factor)


def _reference_dropped(
    key: jax.Array, shape: tuple[int, ...], rate: float, block_size: int, channel_axis: int
) -> np.ndarray:
    """The dropped units: each documented seed expanded to its block, by shifting."""
    spatial = _spatial_axes(len(shape), channel_axis)
    gamma = _gamma(rate, tuple(shape[a] for a in spatial), block_size)
    seed_shape = tuple(n - block_size + 1 if a in spatial else n for a, n in enumerate(shape))
    seeds = ~np.asarray(dx.keep_mask(key, seed_shape, jnp.float32(gamma)))
    dropped = np.zeros(shape, bool)
    for offsets in itertools.product(range(block_size), repeat=len(spatial)):
        target = [slice(None)] * len(shape)
        for axis, offset in zip(spatial, offsets, strict=True):
            target[axis] = slice(offset, offset + seed_shape[axis])
        dropped[tuple(target)] |= seeds
    return dropped


def _full_blocks_cover(
    dropped: np.ndarray, block_size: int, spatial: tuple[int, ...]
) -> np.ndarray:
    """The union of all block_size^n blocks inside the map that are wholly dropped."""
    fully = dropped
    for axis in spatial:  # erosion: position p starts a wholly dropped block
        windows = np.lib.stride_tricks.sliding_window_view(fully, block_size, axis=axis)
        fully = windows.all(axis=-1)
    covered = np.zeros(dropped.shape, bool)
    for offsets in itertools.product(range(block_size), repeat=len(spatial)):
        target = [slice(None)] * dropped.ndim
        for axis, offset in zip(spatial, offsets, strict=True):
            target[axis] = slice(offset, offset + fully.shape[axis])
        covered[tuple(target)] |= fully
    return covered


def _coverage(size: int, block_size: int) -> np.ndarray:
    """``A[a, b]``: the seed positions along one axis whose block covers both a and b."""
    seeds = size - block_size + 1
    a, b = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    low = np.maximum(0, np.maximum(a, b) - block_size + 1)
    high = np.minimum(np.minimum(a, b), seeds - 1)
    return np.maximum(0, high - low + 1)


def _dropped_fraction_moments(
    spatial_sizes: tuple[int, ...], block_size: int, gamma: float
) -> tuple[float, float]:
    """Exact mean and variance of the dropped fraction of one map, for independent seeds.

    A unit q is kept when none of the c(q) seeds covering it fires: P = (1 -
    gamma)**c(q). Two units are both kept when none of the c(q) + c(q') -
    c(q, q') distinct seeds covering either fires. The joint counts are the
    Kronecker product of the per-axis counts (row-major flattening).
    """
    joint = np.ones((1, 1), np.int64)
    for size in spatial_sizes:
        joint = np.kron(joint, _coverage(size, block_size))
    single = np.diag(joint).astype(np.float64)
    keep = 1.0 - gamma
    kept = keep**single
    both = keep ** (single[:, None] + single[None, :] - joint)
    mean = 1.0 - kept.mean()
    variance = (both - kept[:, None] * kept[None, :]).mean()
    return float(mean), float(variance)


# --- DropBlock: exact properties -----------------------------------------------------

LAYOUTS = [
    # (shape, channel_axis, block_size)
    ((3, 17, 4), -1, 5),  # NWC
    ((3, 4, 17), 1, 5),  # NCW
    ((2, 9, 11, 3), -1, 3),  # NHWC
    ((2, 3, 9, 11), 1, 4),  # NCHW, even block
    ((2, 5, 6, 7, 2), -1, 2),  # NDHWC
    ((2, 2, 5, 6, 7), 1, 3),  # NCDHW
    ((2, 7, 7, 3), -1, 7),  # block as large as the map: one seed position
    ((2, 6, 6, 3), -1, 1),  # block_size 1: unit dropout with one global scale
]


# Every layout in float32, and the low-precision dtypes on a 2D layout (the
# dtype only enters the final scaling, which is the same code for every layout).
REFERENCE_CASES = [(*layout, jnp.float32) for layout in LAYOUTS] + [
    (*LAYOUTS[2], dtype) for dtype in (jnp.float16, jnp.bfloat16)
]


@pytest.mark.parametrize(("shape", "channel_axis", "block_size", "dtype"), REFERENCE_CASES)
def test_drop_block_equals_reference(
    shape: tuple[int, ...], channel_axis: int, block_size: int, dtype: Any
) -> None:
    x = _x(shape, dtype)
    # The first of KEY's fold_ins that drops some units and keeps others: with a
    # block as large as the map, one draw has 6 seed positions, so any single
    # key drops nothing with probability 0.7**6 = 0.12.
    for key in (jax.random.fold_in(KEY, index) for index in range(20)):
        dropped = _reference_dropped(key, shape, 0.3, block_size, channel_axis)
        if 0 < dropped.mean() < 1:
            break
    assert 0 < dropped.mean() < 1
    y = dx.drop_block(key, x, 0.3, block_size=block_size, channel_axis=channel_axis)
    assert y.shape == x.shape and y.dtype == dtype
    scale = np.float32(x.size) / np.float32((~dropped).sum())
    kept = (x.astype(jnp.float32) * scale).astype(dtype)
    np.testing.assert_array_equal(y, jnp.where(dropped, jnp.zeros((), dtype), kept))


@pytest.mark.parametrize(("shape", "channel_axis", "block_size"), LAYOUTS)
def test_dropped_units_are_unions_of_whole_blocks_inside_the_map(
    shape: tuple[int, ...], channel_axis: int, block_size: int
) -> None:
    # Checked on the output alone: every dropped unit lies in some block of
    # block_size^n units, wholly inside the map, that is wholly dropped.
    big = (16, *shape[1:])
    y = dx.drop_block(KEY, _x(big), 0.4, block_size=block_size, channel_axis=channel_axis)
    dropped = np.asarray(y == 0)
    covered = _full_blocks_cover(dropped, block_size, _spatial_axes(len(big), channel_axis))
    np.testing.assert_array_equal(covered, dropped)
    assert 0 < dropped.mean() < 1


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_one_scale_for_all_kept_units(dtype: Any) -> None:
    x = jnp.ones((4, 12, 12, 5), dtype)
    y = dx.drop_block(KEY, x, 0.3, block_size=3)
    values = np.unique(np.asarray(y.astype(jnp.float32)))
    kept = int((y != 0).sum())
    scale = (jnp.float32(x.size) / jnp.float32(kept)).astype(dtype).astype(jnp.float32)
    np.testing.assert_array_equal(values, [0.0, float(scale)])


def test_drop_block_float64() -> None:
    with jax.enable_x64(True):
        x = _x((2, 8, 8, 3), jnp.float64)
        y = dx.drop_block(KEY, x, 0.3, block_size=3)
        assert y.dtype == jnp.float64
        dropped = _reference_dropped(KEY, x.shape, 0.3, 3, -1)
        scale = np.float64(x.size) / np.float64((~dropped).sum())
        np.testing.assert_array_equal(y, np.where(dropped, 0.0, np.asarray(x) * scale))


def test_drop_block_gradient_is_mask_times_scale() -> None:
    x = _x((3, 10, 10, 4))
    weights = _x(x.shape, seed=8)
    grad = jax.grad(lambda x: jnp.sum(dx.drop_block(KEY, x, 0.3, block_size=3) * weights))(x)
    dropped = _reference_dropped(KEY, x.shape, 0.3, 3, -1)
    scale = np.float32(x.size) / np.float32((~dropped).sum())
    np.testing.assert_array_equal(grad, np.where(dropped, 0, scale * np.asarray(weights)))


# --- DropBlock: statistics -------------------------------------------------------------

STAT_CASES = [
    # (map shape, block_size, rate, number of maps)
    ((14, 14), 7, 0.1, 4096),
    ((16, 16), 5, 0.5, 2048),
    ((64,), 9, 0.3, 16384),
    ((6, 6, 6), 3, 0.3, 2048),
]


@pytest.mark.parametrize(("spatial", "block_size", "rate", "maps"), STAT_CASES)
def test_dropped_fraction_matches_its_exact_expectation(
    spatial: tuple[int, ...], block_size: int, rate: float, maps: int
) -> None:
    # Maps are independent, so the mean fraction over `maps` maps has the exact
    # variance var / maps (var from the pairwise covariances); the mean of
    # thousands of bounded iid terms is normal to well within 6 sigma.
    channels = 16
    x = jnp.ones((maps // channels, *spatial, channels))
    y = dx.drop_block(jax.random.key(31), x, rate, block_size=block_size)
    measured = float(jnp.mean(y == 0))
    gamma = _gamma(rate, spatial, block_size)
    effective = math.floor(float(gamma) * 2**32) / 2**32  # keep_mask's threshold
    mean, variance = _dropped_fraction_moments(spatial, block_size, effective)
    standard_error = math.sqrt(variance / maps)
    _assert_near(measured, mean, standard_error, f"dropped fraction {spatial} b={block_size}")
    # Overlapping blocks: the expectation is below the rate, detectably so
    # for the larger rates (at 0.1 the gap, 0.007 on 14x14, is within noise).
    assert mean < rate
    if rate >= 0.3:
        assert rate - measured > SIGMAS * standard_error


def test_block_as_large_as_the_map_drops_exactly_rate_on_average() -> None:
    # One seed position per map, gamma = rate: each map is dropped whole, iid.
    maps, rate = 20_000, 0.3
    y = dx.drop_block(jax.random.key(32), jnp.ones((maps // 4, 5, 5, 4)), rate, block_size=5)
    per_map = np.asarray(y == 0).reshape(maps // 4, 25, 4)
    assert (per_map == per_map[:, :1]).all()
    _assert_near(float(per_map.mean()), rate, math.sqrt(rate * (1 - rate) / maps), "whole maps")


def test_maps_are_independent_across_examples_and_channels() -> None:
    # The dropped fractions of two maps are uncorrelated; the sample
    # correlation of n iid pairs has standard error 1 / sqrt(n).
    n, channels = 4096, 8
    y = dx.drop_block(jax.random.key(33), jnp.ones((n, 10, 10, channels)), 0.3, block_size=3)
    fractions = np.asarray(jnp.mean(y == 0, axis=(1, 2)), np.float64)  # (n, channels)
    across_channels = np.corrcoef(fractions[:, 0], fractions[:, 1])[0, 1]
    _assert_near(across_channels, 0.0, 1 / math.sqrt(n), "channel correlation")
    across_examples = np.corrcoef(fractions[:-1:2, 0], fractions[1::2, 0])[0, 1]
    _assert_near(across_examples, 0.0, 1 / math.sqrt(n // 2), "example correlation")
    # Channels-first draws the same kind of masks.
    z = dx.drop_block(
        jax.random.key(34), jnp.ones((n, channels, 10, 10)), 0.3, block_size=3, channel_axis=1
    )
    first = np.asarray(jnp.mean(z == 0, axis=(2, 3)), np.float64)
    corr_first = np.corrcoef(first[:, 0], first[:, 1])[0, 1]
    _assert_near(corr_first, 0.0, 1 / math.sqrt(n), "channel correlation, NCHW")


# --- zoneout ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_zoneout_keeps_old_values_where_dropout_would_drop(dtype: Any, rate: float) -> None:
    h_prev, h_new = _x((16, 32), dtype, seed=1), _x((16, 32), dtype, seed=2)
    y = dx.zoneout(KEY, h_prev, h_new, rate)
    assert y.dtype == dtype and y.shape == h_new.shape
    updated = dx.keep_mask(KEY, h_new.shape, rate)
    np.testing.assert_array_equal(y, jnp.where(updated, h_new, h_prev))


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.9])
def test_zoneout_keep_old_fraction_is_binomial(rate: float) -> None:
    n = 500_000
    y = dx.zoneout(jax.random.key(41), jnp.zeros((n,)), jnp.ones((n,)), rate)
    kept_old = float(jnp.mean(y == 0))
    _assert_near(kept_old, rate, math.sqrt(rate * (1 - rate) / n), f"keep-old at {rate}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("traced", [False, True])
def test_zoneout_inference_is_the_expectation_rounded_once(dtype: Any, traced: bool) -> None:
    h_prev, h_new = _x((8, 16), dtype, seed=1), _x((8, 16), dtype, seed=2)
    rate = 0.3
    if traced:
        y = jax.jit(lambda r: dx.zoneout(None, h_prev, h_new, r, deterministic=True))(
            jnp.float32(rate)
        )
    else:
        y = dx.zoneout(None, h_prev, h_new, rate, deterministic=True)
    assert y.dtype == dtype
    # float32 arithmetic (XLA may fuse a multiply-add) to a few float32
    # roundings of the terms, then one rounding to `dtype` (half an ulp).
    r = float(np.float32(rate))
    wide_prev = np.asarray(h_prev.astype(jnp.float32), np.float64)
    wide_new = np.asarray(h_new.astype(jnp.float32), np.float64)
    exact = r * wide_prev + (1 - r) * wide_new
    magnitude = np.abs(r * wide_prev) + np.abs((1 - r) * wide_new)
    eps = float(jnp.finfo(dtype).eps)
    bound = 3 * float(np.finfo(np.float32).eps) * magnitude + eps / 2 * np.abs(exact)
    error = np.abs(np.asarray(y.astype(jnp.float32), np.float64) - exact)
    assert (error <= bound).all(), float(np.max(error - bound))


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("traced", [False, True])
def test_zoneout_edge_rates(deterministic: bool, traced: bool) -> None:
    h_prev, h_new = _x((6, 5), seed=1), _x((6, 5), seed=2)

    def call(h_prev: jax.Array, h_new: jax.Array, rate: Any) -> jax.Array:
        return dx.zoneout(KEY, h_prev, h_new, rate, deterministic=deterministic)

    for rate, expected in [(0.0, h_new), (1.0, h_prev)]:
        value = jnp.float32(rate) if traced else rate
        np.testing.assert_array_equal(call(h_prev, h_new, value), expected)
        grads = jax.grad(lambda p, n, r: jnp.sum(call(p, n, r) ** 2), argnums=(0, 1))(
            h_prev, h_new, value
        )
        np.testing.assert_array_equal(grads[0], 2 * h_prev * rate)
        np.testing.assert_array_equal(grads[1], 2 * h_new * (1 - rate))


def test_zoneout_gradient_follows_the_mask() -> None:
    h_prev, h_new = _x((16, 8), seed=1), _x((16, 8), seed=2)
    grad_prev, grad_new = jax.grad(
        lambda p, n: jnp.sum(dx.zoneout(KEY, p, n, 0.4) * 3.0), argnums=(0, 1)
    )(h_prev, h_new)
    updated = np.asarray(dx.keep_mask(KEY, h_new.shape, 0.4), np.float32)
    np.testing.assert_array_equal(grad_prev, 3 * (1 - updated))
    np.testing.assert_array_equal(grad_new, 3 * updated)
    check_grads(
        lambda p, n: dx.zoneout(KEY, p, n, 0.4), (h_prev, h_new), order=2, modes=["fwd", "rev"]
    )
    check_grads(
        lambda p, n, r: dx.zoneout(None, p, n, r, deterministic=True),
        (h_prev, h_new, jnp.float32(0.4)),
        order=1,
        eps=1e-2,
    )


def test_zoneout_rnn_under_scan_equals_python_loop() -> None:
    steps, batch, features = 6, 4, 8
    w = _x((features, features), seed=3) * 0.3
    inputs = _x((steps, batch, features), seed=4)

    def cell(h: jax.Array, x: jax.Array, key: jax.Array, rate: jax.Array) -> jax.Array:
        return dx.zoneout(key, h, jnp.tanh(h @ w + x), rate)

    def run(rate: jax.Array) -> jax.Array:
        def body(h: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            step, x = inputs
            h = cell(h, x, jax.random.fold_in(KEY, step), rate)
            return h, h

        return jax.lax.scan(body, jnp.zeros((batch, features)), (jnp.arange(steps), inputs))[1]

    scanned = jax.jit(run)(jnp.float32(0.3))
    h, looped = jnp.zeros((batch, features)), []
    for step in range(steps):
        h = cell(h, inputs[step], jax.random.fold_in(KEY, step), jnp.float32(0.3))
        looped.append(h)
    np.testing.assert_allclose(scanned, jnp.stack(looped), rtol=1e-6, atol=1e-6)
    grad = jax.grad(lambda r: jnp.sum(run(r)))(jnp.float32(0.3))
    assert grad == 0  # the mask is a step function of the rate


# --- LayerDrop ---------------------------------------------------------------------------


def _block(h: jax.Array) -> jax.Array:
    return h + jnp.tanh(h * 0.5)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.9])
def test_layer_drop_follows_one_draw_per_call(rate: float) -> None:
    x = _x((4, 6))
    for key in jax.random.split(KEY, 24):
        y = dx.layer_drop(key, _block, x, rate)
        dropped = not bool(dx.keep_mask(key, (), rate))
        np.testing.assert_array_equal(y, x if dropped else _block(x))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_layer_drop_frequency_is_binomial(rate: float) -> None:
    n = 100_000
    keys = jax.random.split(jax.random.key(51), n)
    x = jnp.ones((3,))
    ys = jax.jit(jax.vmap(lambda k: dx.layer_drop(k, lambda h: h + 1, x, rate)))(keys)
    rows = np.asarray(ys)
    assert ((rows == 1) | (rows == 2)).all() and (rows == rows[:, :1]).all()  # whole layer
    skipped = float((rows[:, 0] == 1).mean())
    _assert_near(skipped, rate, math.sqrt(rate * (1 - rate) / n), f"skip frequency at {rate}")


def test_dropped_layer_is_not_computed() -> None:
    calls: list[int] = []

    def layer(h: jax.Array) -> jax.Array:
        jax.debug.callback(lambda: calls.append(1))
        return _block(h)

    x = _x((4, 6))
    step = jax.jit(lambda key, rate: dx.layer_drop(key, layer, x, rate))
    keys = jax.random.split(KEY, 40)
    kept = sum(bool(dx.keep_mask(k, (), 0.5)) for k in keys)
    for key in keys:
        step(key, jnp.float32(0.5))
    jax.effects_barrier()
    assert 0 < kept < 40 and len(calls) == kept
    # The compiled program branches rather than selecting.
    hlo = step.lower(KEY, jnp.float32(0.5)).compile().as_text()
    assert "conditional" in hlo


def test_layer_drop_static_edges() -> None:
    x = _x((4, 6))

    def never(h: jax.Array) -> jax.Array:
        raise AssertionError("fn must not be called at rate 1")

    np.testing.assert_array_equal(dx.layer_drop(KEY, never, x, 1.0), x)
    np.testing.assert_array_equal(dx.layer_drop(None, _block, x, 0.0), _block(x))
    np.testing.assert_array_equal(
        dx.layer_drop(None, _block, x, 0.7, deterministic=True), _block(x)
    )
    for rate, expected in [(0.0, _block(x)), (1.0, x)]:
        traced = jax.jit(lambda r: dx.layer_drop(KEY, _block, x, r))(jnp.float32(rate))
        # Compiled, tanh may differ from the eager one by an ulp.
        np.testing.assert_allclose(traced, expected, rtol=1e-6, atol=1e-6)


def test_layer_drop_gradient() -> None:
    x = _x((4, 6))
    keys = jax.random.split(KEY, 8)
    outcomes = [not bool(dx.keep_mask(key, (), 0.5)) for key in keys]
    assert any(outcomes) and not all(outcomes)
    grad = jax.jit(jax.grad(lambda h, key: jnp.sum(dx.layer_drop(key, _block, h, 0.5))))
    block_grad = jax.jit(jax.grad(lambda h: jnp.sum(_block(h))))(x)
    for key, dropped in zip(keys, outcomes, strict=True):
        expected = jnp.ones_like(x) if dropped else block_grad
        np.testing.assert_array_equal(grad(x, key), expected)
    # Second order, for one dropped and one kept call, in float64 so that the
    # finite differences are accurate.
    with jax.enable_x64(True):
        x64 = x.astype(jnp.float64)
        for dropped in (True, False):
            key = keys[outcomes.index(dropped)]
            layer = jax.jit(lambda h, key=key: dx.layer_drop(key, _block, h, 0.5))
            check_grads(layer, (x64,), order=2)


def test_layer_drop_pytree_input() -> None:
    x = {"h": _x((2, 3)), "mask": jnp.ones((2,), jnp.int32)}
    fn = lambda t: {"h": _block(t["h"]), "mask": t["mask"]}  # noqa: E731
    y = dx.layer_drop(None, fn, x, 0.5, deterministic=True)
    chex.assert_trees_all_equal(y, fn(x))
    chex.assert_trees_all_equal_shapes_and_dtypes(dx.layer_drop(KEY, fn, x, 0.5), x)


def test_per_layer_rates_under_scan_equal_the_loop() -> None:
    # LayerDrop over a stack of layers with rates rising over depth: the rate
    # is a scanned (traced) value, so one body serves every layer.
    depth = 6
    weights = _x((depth, 5, 5), seed=5) * 0.3
    rates = jnp.linspace(0.0, 0.5, depth, dtype=jnp.float32)

    def residual(w: jax.Array) -> Any:
        return lambda h: h + jnp.tanh(h @ w)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def network(key: jax.Array, x: jax.Array, rates: jax.Array) -> jax.Array:
        def body(h: jax.Array, layer: tuple[jax.Array, ...]) -> tuple[jax.Array, None]:
            index, w, rate = layer
            return dx.layer_drop(jax.random.fold_in(key, index), residual(w), h, rate), None

        return jax.lax.scan(body, x, (jnp.arange(depth), weights, rates))[0]

    x = _x((3, 5))
    h = x
    for index in range(depth):
        key = jax.random.fold_in(KEY, index)
        h = dx.layer_drop(key, residual(weights[index]), h, rates[index])
    np.testing.assert_allclose(network(KEY, x, rates), h, rtol=1e-6, atol=1e-6)
    network(KEY, x, rates[::-1])  # other rates: no new trace
    chex.clear_trace_counter()


# --- Flax Linen -------------------------------------------------------------------------


class _CompactLayers(nn.Module):
    """Two LayerDrop residual blocks whose layers are created inside the branch."""

    rate: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
        for _ in range(2):
            x = dx.layer_drop(
                None if deterministic else self.make_rng("dropout"),
                lambda h: h + nn.Dense(h.shape[-1])(h),
                x,
                self.rate,
                deterministic=deterministic,
            )
        return x


class _SetupLayer(nn.Module):
    """A submodule defined in setup, with its own dropout inside the branch."""

    rate: float = 0.5

    def setup(self) -> None:
        self.dense = nn.Dense(6)
        self.dropout = nn.Dropout(0.5, deterministic=False)

    def __call__(self, x: jax.Array) -> jax.Array:
        fn = lambda h: h + self.dropout(self.dense(h))  # noqa: E731
        return dx.layer_drop(self.make_rng("dropout"), fn, x, self.rate)


def _dense(params: Any, h: jax.Array) -> jax.Array:
    return h + h @ params["kernel"] + params["bias"]


@pytest.mark.parametrize("init_seed", [0, 1, 2, 3])
def test_linen_submodule_inside_layer_drop(init_seed: int) -> None:
    model = _CompactLayers()
    x = _x((3, 6))
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(init_seed)}
    variables = model.init(rngs, x)
    # Both layers' parameters exist whichever way the draws at init went.
    shapes = jax.tree.map(jnp.shape, variables)
    assert shapes == {"params": {f"Dense_{i}": {"kernel": (6, 6), "bias": (6,)} for i in range(2)}}
    params = variables["params"]
    full = _dense(params["Dense_1"], _dense(params["Dense_0"], x))
    np.testing.assert_allclose(model.apply(variables, x, deterministic=True), full, rtol=1e-6)
    apply = jax.jit(lambda v, k: model.apply(v, x, rngs={"dropout": k}))
    outcomes = set()
    for key in jax.random.split(jax.random.key(init_seed), 16):
        y = apply(variables, key)
        np.testing.assert_array_equal(y, model.apply(variables, x, rngs={"dropout": key}))
        # Each layer is either skipped or applied with the initialised params.
        candidates = {
            (a, b): (_dense(params["Dense_1"], h) if b else h)
            for a in (False, True)
            for b in (False, True)
            for h in [_dense(params["Dense_0"], x) if a else x]
        }
        matches = [
            which for which, c in candidates.items() if np.allclose(y, c, rtol=1e-6, atol=1e-6)
        ]
        assert len(matches) == 1, matches
        outcomes.add(matches[0])
        grads = jax.grad(lambda v, key=key: jnp.sum(apply(v, key)))(variables)["params"]
        for index, applied in enumerate(matches[0]):
            norm = float(jnp.abs(grads[f"Dense_{index}"]["kernel"]).sum())
            assert (norm > 0) == applied
    assert len(outcomes) >= 3


def test_linen_setup_submodule_with_its_own_dropout() -> None:
    model = _SetupLayer()
    x = _x((3, 6))
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    assert set(variables["params"]) == {"dense"}
    apply = jax.jit(model.apply)
    ys = [apply(variables, x, rngs={"dropout": k}) for k in jax.random.split(jax.random.key(2), 12)]
    skipped = [bool((y == x).all()) for y in ys]
    assert any(skipped) and not all(skipped)
    for y, skip in zip(ys, skipped, strict=True):
        if not skip:  # the inner dropout drew its own mask: some of dense(h) is zeroed
            delta = np.asarray(y - x)
            assert (delta == 0).any() and (delta != 0).any()
    # Eager and jitted calls draw the same. (Not under nn.jit: it derives the
    # inner nn.Dropout's rng differently from an eager apply, with or
    # without layer_drop; that is Flax's lifting, not dropoutx.)
    for seed in (3, 4, 5):
        rngs = {"dropout": jax.random.key(seed)}
        jitted = apply(variables, x, rngs=rngs)
        np.testing.assert_array_equal(jitted, model.apply(variables, x, rngs=rngs))


# --- shared conventions ------------------------------------------------------------------


def _drop_block_call(key: Any, x: jax.Array, rate: Any, **options: Any) -> jax.Array:
    return dx.drop_block(key, x, rate, block_size=3, **options)


def _zoneout_call(key: Any, x: jax.Array, rate: Any, **options: Any) -> jax.Array:
    return dx.zoneout(key, x, -x, rate, **options)  # x has no zeros: old != new


def _layer_drop_call(key: Any, x: jax.Array, rate: Any, **options: Any) -> jax.Array:
    return dx.layer_drop(key, _block, x, rate, **options)


CALLS = {"drop_block": _drop_block_call, "zoneout": _zoneout_call, "layer_drop": _layer_drop_call}
SHAPE = (4, 7, 6, 3)


@pytest.mark.parametrize("name", list(CALLS))
def test_eager_equals_jit(name: str) -> None:
    fn = CALLS[name]
    for dtype in [jnp.bfloat16, jnp.float32]:
        # LayerDrop's kept branch is the layer itself, compiled into different
        # programs, whose float arithmetic XLA may fuse differently (1 ulp);
        # the draw, dropped or kept, must agree, and the branches differ by
        # tanh(x / 2), far more than that.
        same = (
            functools.partial(np.testing.assert_allclose, rtol=2 * jnp.finfo(dtype).eps)
            if name == "layer_drop"
            else np.testing.assert_array_equal
        )
        x = _x(SHAPE, dtype)
        same(jax.jit(lambda k, x: fn(k, x, 0.3))(KEY, x), fn(KEY, x, 0.3))
        traced = jax.jit(lambda r, x=x: fn(KEY, x, r))(jnp.float32(0.3))
        same(traced, fn(KEY, x, 0.3))


@pytest.mark.parametrize("name", list(CALLS))
def test_vmap_over_keys_inputs_and_rates_equals_python_loop(name: str) -> None:
    fn = CALLS[name]
    keys = jax.random.split(KEY, 4)
    xs = _x((4, *SHAPE))
    rates = jnp.array([0.0, 0.2, 0.5, 1.0], jnp.float32)
    batched = jax.vmap(fn)(keys, xs, rates)
    looped = jnp.stack([fn(k, x, r) for k, x, r in zip(keys, xs, rates, strict=True)])
    np.testing.assert_array_equal(batched, looped)


@pytest.mark.parametrize("name", list(CALLS))
def test_inside_scan_equals_python_loop(name: str) -> None:
    fn = CALLS[name]
    xs = _x((5, *SHAPE))

    def body(carry: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        step, x = inputs
        y = fn(jax.random.fold_in(KEY, step), x + carry, 0.3)
        return jnp.tanh(y), y

    _, scanned = jax.lax.scan(body, jnp.zeros(SHAPE), (jnp.arange(5), xs))
    carry, looped = jnp.zeros(SHAPE), []
    for step in range(5):
        y = fn(jax.random.fold_in(KEY, step), xs[step] + carry, 0.3)
        carry = jnp.tanh(y)
        looped.append(y)
    np.testing.assert_allclose(scanned, jnp.stack(looped), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(CALLS))
def test_traced_rate_does_not_recompile(name: str) -> None:
    fn = CALLS[name]
    x = _x(SHAPE)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key: jax.Array, rate: jax.Array) -> jax.Array:
        return fn(key, x, rate)

    for rate in [0.0, 0.1, 0.5, 0.9, 1.0]:
        step(KEY, jnp.float32(rate))
    chex.clear_trace_counter()


@pytest.mark.parametrize("name", list(CALLS))
def test_check_grads(name: str) -> None:
    fn = CALLS[name]
    # DropBlock and zoneout are affine in x for a fixed key, so a large step
    # is exact and keeps float32 rounding out of the finite differences.
    check_grads(lambda x: fn(KEY, x, 0.3), (_x(SHAPE),), order=1, modes=["fwd", "rev"], eps=1e-2)
    # With respect to a traced rate the mask (and the DropBlock count) is a
    # step function: the gradient is 0, and the output constant within 1e-6
    # of 0.3 for this key and shape.
    with jax.enable_x64(True):
        x64 = _x(SHAPE, jnp.float64)
        check_grads(lambda r: fn(KEY, x64, r), (jnp.float64(0.3),), order=1, eps=1e-6)


@pytest.mark.parametrize("name", ["drop_block", "zoneout"])
def test_backward_pass_stores_no_per_element_residual(name: str) -> None:
    from jax._src.ad_checkpoint import saved_residuals

    residuals = saved_residuals(lambda x: CALLS[name](KEY, x, 0.3), _x((16, 12, 12, 8)))
    assert all(math.prod(aval.shape) <= 2 for aval, _ in residuals), residuals


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("rate", [0.0, 0.999, 1.0])
def test_edge_rates_give_finite_output_and_gradients_for_traced_rate(
    name: str, rate: float
) -> None:
    x = _x(SHAPE)

    def loss(x: jax.Array, rate: jax.Array) -> jax.Array:
        return jnp.sum(CALLS[name](KEY, x, rate) ** 2)

    assert jnp.isfinite(CALLS[name](KEY, x, jnp.float32(rate))).all()
    for grad in jax.grad(loss, argnums=(0, 1))(x, jnp.float32(rate)):
        assert jnp.isfinite(grad).all()


@pytest.mark.parametrize("traced", [False, True])
def test_drop_block_rate_zero_and_one(traced: bool) -> None:
    x = _x(SHAPE)
    for rate, expected in [(0.0, x), (1.0, jnp.zeros_like(x))]:
        value = jnp.float32(rate) if traced else rate
        y = jax.jit(lambda r: _drop_block_call(KEY, x, r))(value) if traced else None
        y = y if traced else _drop_block_call(KEY, x, value)
        np.testing.assert_array_equal(y, expected)
        grad = jax.grad(lambda x, v=value: jnp.sum(_drop_block_call(KEY, x, v) * x))(x)
        np.testing.assert_array_equal(grad, 2 * expected)


@pytest.mark.parametrize("name", list(CALLS))
def test_deterministic_and_rate_zero_need_no_key(name: str) -> None:
    x = _x(SHAPE, jnp.bfloat16)
    assert CALLS[name](None, x, 0.4, deterministic=True).shape == x.shape
    assert CALLS[name](None, x, 0.0).shape == x.shape
    np.testing.assert_array_equal(_drop_block_call(None, x, 0.4, deterministic=True), x)


@pytest.mark.parametrize("name", list(CALLS))
def test_raw_and_typed_keys_agree(name: str) -> None:
    raw = jax.random.PRNGKey(5)
    fn = CALLS[name]
    x = _x(SHAPE)
    np.testing.assert_array_equal(fn(raw, x, 0.4), fn(jax.random.wrap_key_data(raw), x, 0.4))


@pytest.mark.parametrize("name", ["drop_block", "zoneout"])
def test_float64_stays_float64(name: str) -> None:
    with jax.enable_x64(True):
        assert CALLS[name](KEY, _x(SHAPE, jnp.float64), 0.3).dtype == jnp.float64


def test_zero_size_batch() -> None:
    assert dx.drop_block(KEY, jnp.zeros((0, 5, 5, 2)), 0.5, block_size=3).shape == (0, 5, 5, 2)
    assert dx.zoneout(KEY, jnp.zeros((0, 3)), jnp.zeros((0, 3)), 0.5).shape == (0, 3)


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_rate_out_of_range(name: str, rate: float) -> None:
    with _raises(ValueError, f"dropoutx.{name}", "rate", repr(rate)):
        CALLS[name](KEY, _x(SHAPE), rate)
    with _raises(ValueError, f"dropoutx.{name}", "rate", repr(rate)):
        CALLS[name](None, _x(SHAPE), rate, deterministic=True)


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("rate", [-0.5, 1.5, float("nan")])
def test_traced_rate_out_of_range_gives_nan_and_checkify_reports_it(name: str, rate: float) -> None:
    fn = jax.jit(lambda r: CALLS[name](KEY, _x(SHAPE), r))
    assert jnp.isnan(fn(jnp.float32(rate))).all()
    error, _ = checkify.checkify(fn, errors=checkify.user_checks)(jnp.float32(rate))
    assert f"dropoutx.{name}: rate" in (error.get() or "")
    ok, _ = checkify.checkify(fn, errors=checkify.user_checks)(jnp.float32(0.5))
    assert ok.get() is None


@pytest.mark.parametrize("name", list(CALLS))
def test_bad_keys_and_flags(name: str) -> None:
    fn = CALLS[name]
    with _raises(TypeError, f"dropoutx.{name}", "key is required"):
        fn(None, _x(SHAPE), 0.5)
    with _raises(TypeError, f"dropoutx.{name}", "use jax.vmap"):
        fn(jax.random.split(KEY, 3), _x(SHAPE), 0.5)
    with _raises(TypeError, f"dropoutx.{name}", "deterministic must be a Python bool"):
        fn(KEY, _x(SHAPE), 0.5, deterministic="yes")
    with _raises(TypeError, f"dropoutx.{name}", "rate must be a real scalar"):
        fn(KEY, _x(SHAPE), jnp.array([0.1, 0.2]))


@pytest.mark.parametrize(
    ("shape", "options", "error", "fragments"),
    [
        ((2, 8, 8, 3), {"block_size": 0}, ValueError, ("block_size=0", "(2, 8, 8, 3)")),
        ((2, 8, 8, 3), {"block_size": 9}, ValueError, ("block_size=9", "(8, 8)")),
        ((2, 8, 5, 3), {"block_size": 6}, ValueError, ("block_size=6", "(2, 8, 5, 3)")),
        ((2, 3, 8, 8), {"block_size": 4}, ValueError, ("block_size=4", "(3, 8)")),
        ((2, 8, 8, 3), {"block_size": 2.0}, TypeError, ("block_size must be a Python int",)),
        ((2, 8, 8, 3), {"block_size": True}, TypeError, ("block_size must be a Python int",)),
        ((2, 8, 8, 3), {"channel_axis": 0}, ValueError, ("channel_axis=0", "batch axis")),
        ((2, 8, 8, 3), {"channel_axis": 4}, ValueError, ("channel_axis=4", "rank 4")),
        ((2, 8), {"block_size": 1}, ValueError, ("rank >= 3", "(2, 8)")),
    ],
)
def test_drop_block_argument_errors(
    shape: tuple[int, ...], options: dict[str, Any], error: type[Exception], fragments: tuple
) -> None:
    with _raises(error, "dropoutx.drop_block", *fragments):
        dx.drop_block(KEY, jnp.ones(shape), 0.3, **options)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_input(dtype: Any) -> None:
    with _raises(TypeError, "dropoutx.drop_block", "x must be a floating-point array"):
        dx.drop_block(KEY, jnp.ones((2, 8, 8, 3), dtype), 0.3, block_size=3)
    with _raises(TypeError, "dropoutx.zoneout", "h_prev must be a floating-point array"):
        dx.zoneout(KEY, jnp.ones((2, 3), dtype), jnp.ones((2, 3)), 0.3)
    with _raises(TypeError, "dropoutx.zoneout", "h_new must be a floating-point array"):
        dx.zoneout(KEY, jnp.ones((2, 3)), jnp.ones((2, 3), dtype), 0.3)


def test_zoneout_mismatched_states() -> None:
    with _raises(ValueError, "dropoutx.zoneout", "same shape", "(2, 3)", "(3, 2)"):
        dx.zoneout(KEY, jnp.ones((2, 3)), jnp.ones((3, 2)), 0.3)
    with _raises(TypeError, "dropoutx.zoneout", "same dtype", "bfloat16", "float32"):
        dx.zoneout(KEY, jnp.ones((2, 3), jnp.bfloat16), jnp.ones((2, 3)), 0.3)


def test_layer_drop_errors() -> None:
    x = jnp.ones((4, 6))
    with _raises(TypeError, "dropoutx.layer_drop", "fn must be a callable"):
        dx.layer_drop(KEY, "dense", x, 0.3)
    for bad in [lambda h: h[:, :3], lambda h: h.astype(jnp.bfloat16), lambda h: (h, h)]:
        for options in [{}, {"deterministic": True}]:
            with _raises(TypeError, "dropoutx.layer_drop", "fn(x) must return", "(4, 6)"):
                dx.layer_drop(KEY, bad, x, 0.3, **options)
        with _raises(TypeError, "dropoutx.layer_drop", "fn(x) must return"):
            jax.jit(lambda k, r, bad=bad: dx.layer_drop(k, bad, x, r))(KEY, jnp.float32(0.3))


# --- Flax NNX ---------------------------------------------------------------------------


def test_nnx_module_with_its_own_rng_streams() -> None:
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.linear = nnx.Linear(6, 6, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, h: jax.Array) -> jax.Array:
            return h + self.dropout(self.linear(h))

    block = Block(nnx.Rngs(params=0, dropout=1))
    x = _x((3, 6))
    step = nnx.jit(lambda block, key: dx.layer_drop(key, block, x, 0.5))
    keys = jax.random.split(KEY, 10)
    outcomes = [not bool(dx.keep_mask(key, (), 0.5)) for key in keys]
    assert any(outcomes) and not all(outcomes)
    count = int(block.dropout.rngs.count[...])  # advanced each time the block runs
    for key, dropped in zip(keys, outcomes, strict=True):
        y = step(block, key)
        if dropped:
            np.testing.assert_array_equal(y, x)
        else:
            delta = np.asarray(y - x)  # the inner dropout zeroed part of linear(h)
            assert (delta == 0).any() and (delta != 0).any()
            count += 1
        assert int(block.dropout.rngs.count[...]) == count
    eager = dx.layer_drop(keys[outcomes.index(False)], block, x, 0.5)
    assert eager.shape == x.shape
