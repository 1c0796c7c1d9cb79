"""Bad input: a clear error before any work, or a detectable NaN when traced."""

from __future__ import annotations

import decimal
import fractions
from collections.abc import Callable
from typing import Any

import assertions
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify

import dropoutx as dx
from dropoutx import _random

KEY = jax.random.key(0)
X = jnp.ones((4, 6))


def _annealed_with_rate(key: Any, x: Any, rate: Any, **kwargs: Any) -> jax.Array:
    return dx.annealed_dropout(key, x, 0, lambda step: rate, **kwargs)


# name used in messages -> callable with the (key, x, rate, **options) signature.
RATE_FUNCTIONS: dict[str, Callable[..., jax.Array]] = {
    "inverted_dropout": dx.inverted_dropout,
    "vanilla_dropout": dx.vanilla_dropout,
    "annealed_dropout": _annealed_with_rate,
    "gaussian_dropout": dx.gaussian_dropout,
}
ALL_FUNCTIONS: dict[str, Callable[..., jax.Array]] = {
    **RATE_FUNCTIONS,
    "gaussian_noise": dx.gaussian_noise,
}


_raises = assertions.raises


@pytest.mark.parametrize("name", list(RATE_FUNCTIONS))
@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), float("inf")])
def test_rate_out_of_range(name: str, rate: float) -> None:
    with _raises(ValueError, f"dropoutx.{name}", "rate", repr(rate)):
        RATE_FUNCTIONS[name](KEY, X, rate)


@pytest.mark.parametrize("name", ["inverted_dropout", "vanilla_dropout", "gaussian_dropout"])
def test_rate_out_of_range_is_rejected_even_when_deterministic(name: str) -> None:
    # (A deterministic annealed call never evaluates its schedule.)
    with _raises(ValueError, f"dropoutx.{name}", "rate=2.0"):
        RATE_FUNCTIONS[name](None, X, 2.0, deterministic=True)


def test_gaussian_dropout_rejects_rate_one() -> None:
    with _raises(ValueError, "dropoutx.gaussian_dropout", "[0, 1)", "rate=1.0"):
        dx.gaussian_dropout(KEY, X, 1.0)


@pytest.mark.parametrize("stddev", [-0.5, float("nan"), float("inf")])
def test_bad_stddev(stddev: float) -> None:
    with _raises(ValueError, "dropoutx.gaussian_noise", "stddev", repr(stddev)):
        dx.gaussian_noise(KEY, X, stddev)


@pytest.mark.parametrize("name", list(ALL_FUNCTIONS))
@pytest.mark.parametrize("rate", [jnp.array([0.1, 0.2]), True, "0.5", 0.5 + 0j])
def test_rate_must_be_a_real_scalar(name: str, rate: Any) -> None:
    with _raises(TypeError, f"dropoutx.{name}"):
        ALL_FUNCTIONS[name](KEY, X, rate)


@pytest.mark.parametrize("name", list(ALL_FUNCTIONS))
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_, jnp.uint8, jnp.complex64])
def test_non_floating_x(name: str, dtype: Any) -> None:
    with _raises(TypeError, f"dropoutx.{name}", "x must be a floating-point array", "dtype"):
        ALL_FUNCTIONS[name](KEY, jnp.ones((3,), dtype), 0.5)


@pytest.mark.parametrize("name", list(ALL_FUNCTIONS))
def test_batch_of_typed_keys_says_use_vmap(name: str) -> None:
    with _raises(TypeError, f"dropoutx.{name}", "shape (3,)", "use jax.vmap"):
        ALL_FUNCTIONS[name](jax.random.split(KEY, 3), X, 0.5)


@pytest.mark.parametrize("name", list(ALL_FUNCTIONS))
def test_batch_of_raw_keys_says_use_vmap(name: str) -> None:
    raw = jax.random.key_data(jax.random.split(KEY, 3))
    with _raises(TypeError, f"dropoutx.{name}", "shape (3, 2)", "use jax.vmap"):
        ALL_FUNCTIONS[name](raw, X, 0.5)


@pytest.mark.parametrize("name", list(ALL_FUNCTIONS))
@pytest.mark.parametrize(
    "key",
    [jnp.zeros((2,), jnp.float32), jnp.zeros((3,), jnp.uint32), jnp.zeros((2,), jnp.int32), 0],
)
def test_not_a_key(name: str, key: Any) -> None:
    with _raises(TypeError, f"dropoutx.{name}", "key must be a typed PRNG key"):
        ALL_FUNCTIONS[name](key, X, 0.5)


@pytest.mark.parametrize("name", list(ALL_FUNCTIONS))
def test_missing_key_when_training(name: str) -> None:
    with _raises(TypeError, f"dropoutx.{name}", "key is required", "deterministic=False"):
        ALL_FUNCTIONS[name](None, X, 0.5)


@pytest.mark.parametrize("name", ["inverted_dropout", "vanilla_dropout", "gaussian_dropout"])
@pytest.mark.parametrize("dims", [(2,), (-3,), (0, 5)])
def test_broadcast_dims_out_of_range(name: str, dims: tuple[int, ...]) -> None:
    bad = next(d for d in dims if not -2 <= d < 2)
    with _raises(ValueError, f"dropoutx.{name}", "broadcast_dims", str(bad), "rank 2"):
        RATE_FUNCTIONS[name](KEY, X, 0.5, broadcast_dims=dims)


@pytest.mark.parametrize("dims", [1, (0.5,), (True,)])
def test_broadcast_dims_must_be_ints(dims: Any) -> None:
    with _raises(TypeError, "dropoutx.inverted_dropout", "broadcast_dims"):
        dx.inverted_dropout(KEY, X, 0.5, broadcast_dims=dims)


@pytest.mark.parametrize("schedule", [0.5, None, "linear"])
def test_schedule_must_be_callable(schedule: Any) -> None:
    with _raises(TypeError, "dropoutx.annealed_dropout", "schedule must be a callable"):
        dx.annealed_dropout(KEY, X, 0, schedule)


def test_schedule_out_of_range_at_a_concrete_step() -> None:
    schedule = optax.linear_schedule(1.5, 0.0, transition_steps=10)
    with _raises(ValueError, "dropoutx.annealed_dropout", "rate=1.5"):
        dx.annealed_dropout(KEY, X, 0, schedule)


def test_deterministic_must_be_a_python_bool() -> None:
    with _raises(TypeError, "dropoutx.inverted_dropout", "deterministic must be a Python bool"):
        dx.inverted_dropout(KEY, X, 0.5, deterministic="yes")


def test_keep_mask_errors() -> None:
    with _raises(ValueError, "dropoutx.keep_mask", "rate=1.2"):
        dx.keep_mask(KEY, (3,), 1.2)
    with _raises(ValueError, "dropoutx.keep_mask", "broadcast_dims"):
        dx.keep_mask(KEY, (3,), 0.5, broadcast_dims=(1,))
    with _raises(TypeError, "dropoutx.keep_mask", "use jax.vmap"):
        dx.keep_mask(jax.random.split(KEY), (3,), 0.5)
    with _raises(ValueError, "dropoutx.keep_mask", "shape"):
        dx.keep_mask(KEY, (3, -1), 0.5)


def test_errors_are_raised_before_any_computation() -> None:
    # Validation is plain Python on concrete values: under jit it fails while
    # tracing, so nothing is compiled or run.
    with _raises(ValueError, "dropoutx.inverted_dropout"):
        jax.jit(lambda x: dx.inverted_dropout(KEY, x, 1.5)).lower(X)


# --- traced values out of range -------------------------------------------------


@pytest.mark.parametrize("name", list(RATE_FUNCTIONS))
@pytest.mark.parametrize("rate", [-0.5, 1.5, float("nan")])
def test_traced_rate_out_of_range_gives_nan_and_checkify_reports_it(name: str, rate: float) -> None:
    fn = jax.jit(lambda r: RATE_FUNCTIONS[name](KEY, X, r))
    assert jnp.isnan(fn(jnp.float32(rate))).all()
    error, _ = checkify.checkify(fn, errors=checkify.user_checks)(jnp.float32(rate))
    message = error.get()
    assert message is not None and f"dropoutx.{name}" in message and "rate" in message
    ok, _ = checkify.checkify(fn, errors=checkify.user_checks)(jnp.float32(0.5))
    assert ok.get() is None


def test_traced_gaussian_rate_one_is_out_of_range() -> None:
    fn = jax.jit(lambda r: dx.gaussian_dropout(KEY, X, r))
    assert jnp.isnan(fn(jnp.float32(1.0))).all()


def test_traced_stddev_out_of_range() -> None:
    fn = jax.jit(lambda s: dx.gaussian_noise(KEY, X, s))
    for stddev in [-1.0, float("nan"), float("inf")]:
        assert jnp.isnan(fn(jnp.float32(stddev))).all()
        error, _ = checkify.checkify(fn, errors=checkify.user_checks)(jnp.float32(stddev))
        assert "dropoutx.gaussian_noise: stddev" in (error.get() or "")


def test_traced_keep_mask_rate_out_of_range_drops_everything() -> None:
    fn = jax.jit(lambda r: dx.keep_mask(KEY, (5, 5), r))
    for rate in [-0.5, 1.5, float("nan")]:
        np.testing.assert_array_equal(fn(jnp.float32(rate)), np.zeros((5, 5), bool))
        error, _ = checkify.checkify(fn, errors=checkify.user_checks)(jnp.float32(rate))
        assert "dropoutx.keep_mask: rate" in (error.get() or "")


# --- bad input found by probing (issue 13, section 3) ----------------------------------


def _alpha_or_annealed(name: str) -> Callable[..., jax.Array]:
    return {"alpha_dropout": dx.alpha_dropout, **RATE_FUNCTIONS}[name]


# Every transform that takes broadcast_dims, by the name its errors use.
BROADCAST_FUNCTIONS = ["inverted_dropout", "vanilla_dropout", "annealed_dropout"]
BROADCAST_FUNCTIONS += ["gaussian_dropout", "alpha_dropout"]

# Every transform as (key, x, rate), with a rate valid for all of them.
EVERY_TRANSFORM: dict[str, Callable[..., jax.Array]] = {
    **ALL_FUNCTIONS,
    "alpha_dropout": dx.alpha_dropout,
    "drop_path": dx.drop_path,
    "spatial_dropout": dx.spatial_dropout,
}


@pytest.mark.parametrize("rate", [1 - 1e-9, 1 - 2**-26, 1 - 2**-40])
def test_gaussian_rate_just_below_one_gives_the_finite_formula(rate: float) -> None:
    # Such a rate is in [0, 1), so valid; float32 rounds it to 1, but the noise
    # scale is taken in Python, so the result is the formula's, not NaN.
    y = dx.gaussian_dropout(KEY, X, rate)
    assert jnp.isfinite(y).all()
    sigma = np.sqrt(rate / (1 - rate))
    eps = np.asarray(_random.standard_normal(KEY, X.shape), np.float64)
    np.testing.assert_allclose(y, 1 + sigma * eps, rtol=1e-5)


def test_gaussian_dropout_modules_with_a_rate_just_below_one_are_finite() -> None:
    from flax import nnx

    from dropoutx import linen as dxl
    from dropoutx import nnx as dxn

    rate = 1 - 1e-9
    linen_layer = dxl.GaussianDropout(rate, deterministic=False)
    y = linen_layer.apply({}, X, rngs={"dropout": KEY})
    assert y.shape == X.shape and jnp.isfinite(y).all() and (y != X).any()
    nnx_layer = dxn.GaussianDropout(rate, rngs=nnx.Rngs(dropout=0))
    y = nnx_layer(X)
    assert y.shape == X.shape and jnp.isfinite(y).all() and (y != X).any()


@pytest.mark.parametrize("name", BROADCAST_FUNCTIONS)
def test_broadcast_dims_may_be_any_iterable_read_once(name: str) -> None:
    fn = _alpha_or_annealed(name)
    expected = fn(KEY, X, 0.5, broadcast_dims=(0,))
    np.testing.assert_array_equal(fn(KEY, X, 0.5, broadcast_dims=(d for d in [0])), expected)
    np.testing.assert_array_equal(fn(KEY, X, 0.5, broadcast_dims=[0]), expected)
    np.testing.assert_array_equal(fn(KEY, X, 0.5, broadcast_dims=range(1)), expected)
    mask = dx.keep_mask(KEY, (4, 6), 0.5, broadcast_dims=(d for d in [0]))
    np.testing.assert_array_equal(mask, dx.keep_mask(KEY, (4, 6), 0.5, broadcast_dims=(0,)))


@pytest.mark.parametrize("name", [*BROADCAST_FUNCTIONS, "keep_mask"])
@pytest.mark.parametrize("dims", [None, 1.0, "01"])
def test_broadcast_dims_of_the_wrong_type_is_a_type_error(name: str, dims: Any) -> None:
    with _raises(TypeError, f"dropoutx.{name}", f"broadcast_dims={dims!r}"):
        if name == "keep_mask":
            dx.keep_mask(KEY, (4, 6), 0.5, broadcast_dims=dims)
        else:
            _alpha_or_annealed(name)(KEY, X, 0.5, broadcast_dims=dims)


@pytest.mark.parametrize("shape", [(2.5,), (2.0, 3), "ab", None, 3, (True,)])
def test_keep_mask_shape_must_be_a_sequence_of_ints(shape: Any) -> None:
    with _raises(TypeError, "dropoutx.keep_mask", "shape must be a sequence of ints"):
        dx.keep_mask(KEY, shape, 0.5)


def test_keep_mask_accepts_integer_scalars_as_shape_entries() -> None:
    assert dx.keep_mask(KEY, (np.int64(2), jnp.int32(3)), 0.5).shape == (2, 3)


@pytest.mark.parametrize("name", list(EVERY_TRANSFORM))
def test_zero_size_input_with_a_huge_later_axis_gives_an_empty_array(name: str) -> None:
    # The counter's stride for axis 0 would be 2**33, beyond uint32.
    x = jnp.zeros((0, 2**33))
    y = EVERY_TRANSFORM[name](KEY, x, 0.5)
    assert y.shape == (0, 2**33) and y.dtype == x.dtype
    assert dx.keep_mask(KEY, (0, 2**33), 0.5).shape == (0, 2**33)
    assert dx.keep_mask(KEY, (3, 0, 2**33), 0.5).shape == (3, 0, 2**33)


@pytest.mark.parametrize("name", list(EVERY_TRANSFORM))
@pytest.mark.parametrize(
    ("x", "fragment"),
    [([1.0, 2.0], "got list"), ((1.0,), "got tuple"), ("ab", "got str"), (None, "got None")],
)
def test_x_that_is_not_an_array_is_a_type_error(name: str, x: Any, fragment: str) -> None:
    with _raises(TypeError, f"dropoutx.{name}", "x must be", fragment):
        EVERY_TRANSFORM[name](KEY, x, 0.5)


@pytest.mark.parametrize("name", list(EVERY_TRANSFORM))
@pytest.mark.parametrize("rate", [fractions.Fraction(1, 4), decimal.Decimal("0.25")])
def test_fraction_and_decimal_rates_convert_cleanly(name: str, rate: Any) -> None:
    fn = EVERY_TRANSFORM[name]
    np.testing.assert_array_equal(fn(KEY, X, rate), fn(KEY, X, 0.25))


@pytest.mark.parametrize("rate", [fractions.Fraction(3, 2), decimal.Decimal("NaN")])
def test_fraction_and_decimal_rates_out_of_range_raise(rate: Any) -> None:
    with _raises(ValueError, "dropoutx.inverted_dropout", "rate="):
        dx.inverted_dropout(KEY, X, rate)


@pytest.mark.parametrize("name", list(EVERY_TRANSFORM))
def test_a_weakly_typed_input_stays_weak_at_every_rate(name: str) -> None:
    fn = EVERY_TRANSFORM[name]
    rates = [0.0, 0.5] if name == "gaussian_dropout" else [0.0, 0.5, 1.0]
    bf16 = jnp.ones((2, 3), jnp.bfloat16)
    for rate in rates:
        y = fn(KEY, jnp.full((2, 3), 3.0), rate)  # a Python float made an array: weak
        assert y.dtype == jnp.float32 and y.weak_type, (rate, y)
        assert (y + bf16).dtype == jnp.bfloat16, rate
        assert not fn(KEY, jnp.ones((2, 3), jnp.float32), rate).weak_type, rate
        if name not in ("drop_path", "spatial_dropout"):  # which need axes
            assert fn(KEY, 3.0, rate).weak_type, rate


def test_masks_and_noise_do_not_depend_on_threefry_partitionable() -> None:
    shape = (8, 33)
    x = jnp.ones(shape)
    results = {}
    for partitionable in [True, False]:
        with jax.threefry_partitionable(partitionable):
            results[partitionable] = (
                jax.random.bits(KEY, shape, jnp.uint32),
                dx.keep_mask(KEY, shape, 0.3),
                dx.keep_mask(KEY, shape, 0.3, broadcast_dims=(0,)),
                dx.inverted_dropout(KEY, x, 0.3),
                dx.gaussian_noise(KEY, jnp.zeros(shape), 1.0),
            )
    (bits, *ours), (bits_legacy, *ours_legacy) = results[True], results[False]
    # jax.random.bits itself changes with the flag ...
    assert (np.asarray(bits) != np.asarray(bits_legacy)).any()
    # ... but dropoutx's masks and noise are the same under both values.
    for a, b in zip(ours, ours_legacy, strict=True):
        np.testing.assert_array_equal(a, b)


def test_float16_near_its_maximum_overflows_to_inf_as_the_formula_and_flax_do() -> None:
    import flax.linen as nn

    x = jnp.full((64,), 65504, jnp.float16)  # float16's largest finite value
    y = dx.inverted_dropout(KEY, x, 0.5)
    mask = dx.keep_mask(KEY, x.shape, 0.5)
    assert mask.any() and not mask.all()
    # The formula: (65504 / 0.5) rounded to float16 is inf.
    np.testing.assert_array_equal(y, np.where(mask, np.inf, 0).astype(np.float16))
    flax_y = nn.Dropout(0.5, deterministic=False).apply({}, x, rngs={"dropout": KEY})
    assert np.isinf(np.asarray(flax_y)[np.asarray(flax_y) != 0]).all()


# --- no key needed where nothing random is drawn -------------------------------------


@pytest.mark.parametrize("name", list(EVERY_TRANSFORM))
def test_key_may_be_none_at_a_concrete_rate_of_zero_or_one(name: str) -> None:
    fn = EVERY_TRANSFORM[name]
    np.testing.assert_array_equal(fn(None, X, 0.0), X)
    if name not in ("gaussian_dropout", "gaussian_noise"):  # rate 1: invalid; stddev 1: noise
        np.testing.assert_array_equal(fn(None, X, 1.0), jnp.zeros_like(X))


def test_key_may_be_none_for_annealed_dropout_and_keep_mask_at_rates_zero_and_one() -> None:
    np.testing.assert_array_equal(dx.annealed_dropout(None, X, 5, lambda step: 0.0), X)
    np.testing.assert_array_equal(dx.annealed_dropout(None, X, 5, lambda step: 1.0), 0 * X)
    np.testing.assert_array_equal(dx.keep_mask(None, (3,), 0.0), np.ones(3, bool))
    np.testing.assert_array_equal(dx.keep_mask(None, (3,), 1.0), np.zeros(3, bool))
    np.testing.assert_array_equal(dx.dropout(None, X, jnp.float32(1.0)), 0 * X)  # concrete


@pytest.mark.parametrize("name", list(EVERY_TRANSFORM))
@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_a_malformed_key_still_raises_at_rates_zero_and_one(name: str, rate: float) -> None:
    if name == "gaussian_dropout" and rate == 1.0:
        return
    with _raises(TypeError, f"dropoutx.{name}", "key must be a typed PRNG key"):
        EVERY_TRANSFORM[name](jnp.zeros((3,), jnp.float32), X, rate)
    with _raises(TypeError, f"dropoutx.{name}", "use jax.vmap"):
        EVERY_TRANSFORM[name](jax.random.split(KEY, 3), X, rate)


@pytest.mark.parametrize("name", list(EVERY_TRANSFORM))
def test_a_traced_rate_still_needs_a_key(name: str) -> None:
    with _raises(TypeError, f"dropoutx.{name}", "key is required"):
        jax.jit(lambda r: EVERY_TRANSFORM[name](None, X, r))(jnp.float32(0.0))
    with _raises(TypeError, "dropoutx.keep_mask", "key is required"):
        jax.jit(lambda r: dx.keep_mask(None, (3,), r))(jnp.float32(0.0))
