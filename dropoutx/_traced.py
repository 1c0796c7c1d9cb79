"""What a traced argument out of range does: a NaN output and a checkify report.

A concrete argument is checked in Python before anything runs (``_validate``).
A traced one cannot be: its value is known only on the device. The transforms
then make the output all NaN, which cannot be mistaken for a real result, and
emit a ``checkify.debug_check`` that names the public function:
``checkify.checkify(f, errors=checkify.user_checks)`` raises with the offending
value, and without checkify the check is dropped and costs nothing.

Both happen in the public wrapper, outside the jitted body of the transform,
so that transforms sharing a body (e.g. ``inverted_dropout`` and
``drop_path``) share its compilation, and only for a traced value, so that an
eager call with a Python rate does no extra work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

# Each interval an argument may have to lie in, with its membership test
# (false for NaN).
_IN_INTERVAL: dict[str, Callable[[jax.Array], jax.Array]] = {
    "[0, 1]": lambda value: (value >= 0) & (value <= 1),
    "[0, 1)": lambda value: (value >= 0) & (value < 1),
    "[0, inf)": lambda value: (value >= 0) & jnp.isfinite(value),
}


def concrete_value(value: Any) -> float | None:
    """``value`` as a Python float if it is a concrete scalar; ``None`` if it is traced.

    The modules use it to tell a concrete rate of 0 or 1, which needs no key,
    from a traced one, which always does.
    """
    concrete = not isinstance(value, jax.core.Tracer) and jnp.ndim(value) == 0
    return float(value) if concrete else None


def report(fn_name: str, arg_name: str, value: jax.Array, interval: str) -> jax.Array:
    """Reports a traced ``value`` outside ``interval`` under ``checkify``.

    Returns whether ``value`` lies in ``interval``.
    """
    valid = _IN_INTERVAL[interval](value)
    checkify.debug_check(
        valid,
        f"dropoutx.{fn_name}: {arg_name} must be in {interval}, got {arg_name}={{value}}",
        value=value,
    )
    return valid


def guard(fn_name: str, arg_name: str, y: Any, value: jax.Array, interval: str) -> Any:
    """Returns ``y``, or all-NaN when the traced ``value`` is outside ``interval``.

    ``y`` is an array or a pytree (e.g. LayerDrop's output), whose
    floating-point leaves all become NaN. Also reports the value (see
    :func:`report`). The guard multiplies by a scalar (exactly 1 when valid)
    rather than selecting elementwise, so that reverse-mode autodiff saves a
    scalar, not a full-size predicate.
    """
    valid = report(fn_name, arg_name, value, interval)

    def nan_unless_valid(leaf: jax.Array) -> jax.Array:
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            return leaf
        return leaf * jnp.where(valid, 1, jnp.nan).astype(leaf.dtype)

    return jax.tree.map(nan_unless_valid, y)
