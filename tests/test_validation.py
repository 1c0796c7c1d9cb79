"""Bad input: a clear error before any work, or a detectable NaN when traced."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify

import dropoutx as dx

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


def _raises(error: type[Exception], *fragments: str) -> Any:
    """``pytest.raises`` requiring every fragment to appear in the message."""
    pattern = "".join(f"(?=[\\s\\S]*{re.escape(fragment)})" for fragment in fragments)
    return pytest.raises(error, match=pattern)


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
