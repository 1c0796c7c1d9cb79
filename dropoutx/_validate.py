"""Argument checks shared by every public transform.

Each check runs on concrete Python values before anything is traced or
computed, and raises an error that names the public function, the argument and
the offending value. Values that are traced cannot be checked here; the
transforms turn an out-of-range traced value into a NaN output and a
``checkify.debug_check`` instead (see ``_core.guard_traced``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def floating_input(fn_name: str, x: Any) -> jax.Array:
    """Returns ``x`` as a JAX array, or raises if it is not floating point."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"dropoutx.{fn_name}: x must be a floating-point array (float16, "
            f"bfloat16, float32 or float64), got dtype {dtype}. Cast it first, "
            f"e.g. x.astype(jnp.float32)."
        )
    return jnp.asarray(x)


def concrete_scalar(fn_name: str, arg_name: str, value: Any) -> float | None:
    """Returns a scalar's Python value, or ``None`` when it is traced.

    Raises:
      TypeError: if ``value`` is not a real scalar.
    """
    is_number = isinstance(value, numbers.Number | np.ndarray | np.generic | jax.Array)
    if not is_number or isinstance(value, bool | np.bool_) or jnp.ndim(value) != 0:
        raise TypeError(
            f"dropoutx.{fn_name}: {arg_name} must be a real scalar, got "
            f"{value!r}. For one {arg_name} per example, use jax.vmap."
        )
    dtype = jnp.result_type(value)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(
            f"dropoutx.{fn_name}: {arg_name} must be a real number, got {value!r} of dtype {dtype}."
        )
    try:
        return float(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def rate(fn_name: str, value: Any, *, allow_one: bool = True) -> float | None:
    """Checks a drop probability; returns its Python value or ``None`` if traced.

    Raises:
      TypeError: if ``value`` is not a real scalar.
      ValueError: if a concrete ``value`` is NaN or outside ``[0, 1]`` (or
        ``[0, 1)`` when ``allow_one`` is false).
    """
    concrete = concrete_scalar(fn_name, "rate", value)
    if concrete is None:
        return None
    upper_ok = concrete <= 1.0 if allow_one else concrete < 1.0
    if math.isnan(concrete) or concrete < 0.0 or not upper_ok:
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(
            f"dropoutx.{fn_name}: rate is the probability of dropping a unit "
            f"and must be in {interval}, got rate={concrete!r}. "
            f"(For a keep probability p, pass rate=1 - p.)"
        )
    return concrete


def stddev(fn_name: str, value: Any) -> float | None:
    """Checks a noise scale; returns its Python value or ``None`` if traced.

    Raises:
      TypeError: if ``value`` is not a real scalar.
      ValueError: if a concrete ``value`` is negative, NaN or infinite.
    """
    concrete = concrete_scalar(fn_name, "stddev", value)
    if concrete is None:
        return None
    if not (math.isfinite(concrete) and concrete >= 0.0):
        raise ValueError(
            f"dropoutx.{fn_name}: stddev must be finite and >= 0, got stddev={concrete!r}."
        )
    return concrete


def broadcast_dims(fn_name: str, dims: Sequence[int], ndim: int) -> tuple[int, ...]:
    """Normalises ``broadcast_dims`` to sorted, unique, non-negative axes.

    Raises:
      TypeError: if ``dims`` is not a sequence of integers.
      ValueError: if an entry is outside ``[-ndim, ndim)``.
    """
    if isinstance(dims, int) or not all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) for d in dims
    ):
        raise TypeError(
            f"dropoutx.{fn_name}: broadcast_dims must be a sequence of ints, "
            f"got broadcast_dims={dims!r}; write e.g. broadcast_dims=(1,)."
        )
    for d in dims:
        if not -ndim <= d < ndim:
            raise ValueError(
                f"dropoutx.{fn_name}: broadcast_dims entry {d} is out of range "
                f"for an input of rank {ndim}; entries must lie in "
                f"[{-ndim}, {ndim}), got broadcast_dims={tuple(dims)!r}."
            )
    return tuple(sorted({int(d) % ndim for d in dims}))


def shape(fn_name: str, value: Any) -> tuple[int, ...]:
    """Checks a shape argument and returns it as a tuple of ints."""
    try:
        result = tuple(int(d) for d in value)
    except TypeError:
        raise TypeError(
            f"dropoutx.{fn_name}: shape must be a sequence of ints, got {value!r}."
        ) from None
    if any(d < 0 for d in result):
        raise ValueError(f"dropoutx.{fn_name}: shape entries must be >= 0, got {value!r}.")
    return result


def schedule(fn_name: str, value: Any) -> Callable[[Any], Any]:
    """Checks that ``value`` is a schedule (a callable ``step -> rate``)."""
    if not callable(value):
        raise TypeError(
            f"dropoutx.{fn_name}: schedule must be a callable step -> rate, "
            f"such as optax.linear_schedule(0.5, 0.0, 10_000), got {value!r}."
        )
    return value


def static_bool(fn_name: str, arg_name: str, value: Any) -> bool:
    """Checks a flag that selects the code path, so must be a Python bool."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(
            f"dropoutx.{fn_name}: {arg_name} must be a Python bool, got "
            f"{arg_name}={value!r}. It selects the code path, so it cannot be "
            f"traced; pass it as a static argument to jax.jit."
        )
    return bool(value)


def deterministic(fn_name: str, value: Any) -> bool:
    """Checks the ``deterministic`` flag, which must be known at trace time."""
    return static_bool(fn_name, "deterministic", value)


def axis(fn_name: str, arg_name: str, value: Any, ndim: int) -> int:
    """Normalises an axis of an array of rank ``ndim`` to ``[0, ndim)``, or raises."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise TypeError(f"dropoutx.{fn_name}: {arg_name} must be an int, got {arg_name}={value!r}.")
    if not -ndim <= value < ndim:
        raise ValueError(
            f"dropoutx.{fn_name}: {arg_name}={value} is out of range for an "
            f"input of rank {ndim}; it must lie in [{-ndim}, {ndim})."
        )
    return int(value) % ndim


def count(fn_name: str, arg_name: str, value: Any, *, minimum: int) -> int:
    """Checks a static integer count, ``>= minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool | np.bool_):
        raise TypeError(
            f"dropoutx.{fn_name}: {arg_name} must be a Python int, got "
            f"{arg_name}={value!r}. It sets array shapes, so it cannot be traced."
        )
    if value < minimum:
        raise ValueError(
            f"dropoutx.{fn_name}: {arg_name} must be >= {minimum}, got {arg_name}={value}."
        )
    return int(value)
