"""Property-based tests: exact invariants over shapes, dtypes, rates and axes."""

from __future__ import annotations

from typing import Any

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import dropoutx as dx

DTYPES = st.sampled_from([jnp.float16, jnp.bfloat16, jnp.float32])
RATES = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0, allow_subnormal=False))


@st.composite
def cases(draw: Any) -> tuple[jax.Array, jax.Array, float, tuple[int, ...]]:
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
    dtype = draw(DTYPES)
    values = draw(hnp.arrays(np.float32, shape, elements=st.floats(-1e3, 1e3, width=32)))
    x = jnp.asarray(values).astype(dtype)
    dims = draw(st.lists(st.integers(-len(shape), len(shape) - 1), max_size=3)) if shape else []
    key = jax.random.key(draw(st.integers(0, 2**31 - 1)))
    return key, x, draw(RATES), tuple(dims)


@given(cases())
def test_inverted_output_is_zero_or_the_rounded_scaled_input(case: Any) -> None:
    key, x, rate, dims = case
    y = dx.inverted_dropout(key, x, rate, broadcast_dims=dims)
    assert y.shape == x.shape and y.dtype == x.dtype
    mask = dx.keep_mask(key, x.shape, rate, broadcast_dims=dims)
    if rate < 1:
        scaled = (x.astype(jnp.float32) / (1 - rate)).astype(x.dtype)
    else:
        scaled = jnp.zeros_like(x)
    np.testing.assert_array_equal(y, jnp.where(mask, scaled, jnp.zeros((), x.dtype)))


@given(cases())
def test_vanilla_output_is_zero_or_the_input(case: Any) -> None:
    key, x, rate, dims = case
    y = dx.vanilla_dropout(key, x, rate, broadcast_dims=dims)
    assert y.shape == x.shape and y.dtype == x.dtype
    mask = dx.keep_mask(key, x.shape, rate, broadcast_dims=dims)
    np.testing.assert_array_equal(y, jnp.where(mask, x, jnp.zeros((), x.dtype)))


@given(cases())
def test_mask_is_constant_along_broadcast_dims(case: Any) -> None:
    key, x, rate, dims = case
    mask = np.asarray(dx.keep_mask(key, x.shape, rate, broadcast_dims=dims))
    for axis in dims:
        first = np.take(mask, [0], axis=axis) if mask.shape[axis] else mask
        np.testing.assert_array_equal(mask, np.broadcast_to(first, mask.shape))


@settings(max_examples=15)  # each example compiles a program
@given(cases())
def test_traced_and_python_rates_agree(case: Any) -> None:
    key, x, rate, dims = case
    # x is an argument, as in a model: closed over, it would be a constant, and
    # XLA would fold `constant / keep` into one exact division, where for an
    # array it multiplies by the rounded `1 / keep` (in both calls alike).
    traced = jax.jit(lambda x, r: dx.inverted_dropout(key, x, r, broadcast_dims=dims))
    np.testing.assert_array_equal(
        traced(x, jnp.float32(rate)), dx.inverted_dropout(key, x, rate, broadcast_dims=dims)
    )


@given(cases(), st.floats(0.0, 0.99))
def test_gaussian_transforms_keep_shape_dtype_and_finiteness(case: Any, rate: float) -> None:
    key, x, _, dims = case
    for y in (
        dx.gaussian_dropout(key, x, rate, broadcast_dims=dims),
        dx.gaussian_noise(key, x, rate),
    ):
        assert y.shape == x.shape and y.dtype == x.dtype
        wide = np.asarray(y.astype(jnp.float32))
        # float16 can overflow to inf on |x| ~ 1e3 times a large multiplier;
        # it must never be NaN.
        assert not np.isnan(wide).any()
