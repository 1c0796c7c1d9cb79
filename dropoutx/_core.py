"""Pieces shared by the transforms: compute dtype and the traced-value guard."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import checkify


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """Scales and noise are computed in float32, or float64 for float64 input."""
    return jnp.dtype(jnp.float64) if dtype == jnp.float64 else jnp.dtype(jnp.float32)


def check_traced(
    fn_name: str, arg_name: str, value: jax.Array, valid: jax.Array, interval: str
) -> None:
    """Reports an out-of-range traced argument under ``checkify``.

    Concrete arguments are validated before tracing, so ``valid`` can only be
    false for a traced value. ``checkify.checkify(f,
    errors=checkify.user_checks)`` then raises with the offending value;
    without checkify the check is dropped and costs nothing.
    """
    checkify.debug_check(
        valid,
        f"dropoutx.{fn_name}: {arg_name} must be in {interval}, got {arg_name}={{value}}",
        value=value,
    )


def guard_traced(
    fn_name: str,
    y: jax.Array,
    arg_name: str,
    value: jax.Array,
    valid: jax.Array,
    interval: str,
) -> jax.Array:
    """Returns ``y``, or all-NaN when a traced ``value`` is out of range.

    The NaN output cannot be mistaken for a real result, and ``checkify``
    reports the value (see :func:`check_traced`). The guard multiplies by a
    scalar (exactly 1 when valid) rather than selecting elementwise, so that
    reverse-mode autodiff saves a scalar, not a full-size predicate.
    """
    check_traced(fn_name, arg_name, value, valid, interval)
    return y * jnp.where(valid, 1, jnp.nan).astype(y.dtype)


def rate_in_range(rate: jax.Array) -> jax.Array:
    """``0 <= rate <= 1``, false for NaN."""
    return (rate >= 0) & (rate <= 1)
