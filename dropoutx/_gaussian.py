"""Gaussian dropout (multiplicative noise) and additive Gaussian noise."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropoutx import _core, _random, _validate


@functools.partial(
    jax.jit, static_argnames=("fn_name", "arg_name", "multiplicative", "broadcast_dims")
)
def _noisy(
    key: jax.Array,
    x: jax.Array,
    param: jax.Array,
    stddev: jax.Array,
    *,
    fn_name: str,
    arg_name: str,
    multiplicative: bool,
    broadcast_dims: tuple[int, ...] = (),
) -> jax.Array:
    """``x * (1 + stddev * eps)`` or ``x + stddev * eps``, ``eps ~ N(0, 1)``.

    ``eps`` has one value per position of the non-broadcast axes. ``param`` is
    the user's argument (rate or stddev), checked here when traced.
    The body runs under ``jax.checkpoint``: the noise is regenerated from the
    key in the backward pass instead of being stored.
    """
    dtype = _core.compute_dtype(x.dtype)
    noise_shape = tuple(1 if axis in broadcast_dims else n for axis, n in enumerate(x.shape))

    def apply(key: jax.Array, x: jax.Array, stddev: jax.Array) -> jax.Array:
        sharding = jax.typeof(x).sharding
        noise_sharding = _random.replicated_along(sharding, broadcast_dims)
        eps = _random.standard_normal(key, noise_shape, noise_sharding).astype(dtype)
        noise = stddev.astype(dtype) * jnp.broadcast_to(eps, x.shape, out_sharding=sharding)
        wide = x.astype(dtype)
        return (wide * (1 + noise) if multiplicative else wide + noise).astype(x.dtype)

    # The barrier keeps the scalar opaque to XLA: a Python stddev inside an
    # outer jit would otherwise be folded into the fused kernel as a constant
    # and the arithmetic rewritten around it, so the result would differ by a
    # rounding from the eager call. It costs nothing per element.
    stddev = jax.lax.optimization_barrier(stddev)
    y = jax.checkpoint(apply)(key, x, stddev)
    if multiplicative:
        valid = (param >= 0) & (param < 1)
        interval = "[0, 1)"
    else:
        valid = (param >= 0) & jnp.isfinite(param)
        interval = "[0, inf)"
    return _core.guard_traced(fn_name, y, arg_name, param, valid, interval)


def gaussian_dropout(
    key: Any,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
    """Gaussian dropout: multiply by ``N(1, rate / (1 - rate))`` noise.

    While training ``y = x * (1 + sqrt(rate / (1 - rate)) * eps)`` with
    ``eps ~ N(0, 1)``; at inference ``y = x``. The multiplier has the mean (1)
    and variance (``rate / (1 - rate)``) of inverted dropout's ``mask / (1 -
    rate)``, as in Srivastava et al. (2014, section 10). The noise is drawn in
    float32 and equals ``jax.random.normal(key, shape)``; the product is
    computed in float32 (float64 for float64 input) and rounded once.

    The gradient with respect to ``x`` is the multiplier, regenerated from the
    key in the backward pass (nothing per-element is stored). With respect to a
    traced ``rate`` it is the pathwise derivative ``x * eps * d sigma / d
    rate``; at ``rate == 0``, where ``sigma = sqrt(rate / (1 - rate))`` has an
    infinite slope, it is defined as 0 so that no gradient is inf or NaN.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true.
      x: the activations, of any floating dtype and shape.
      rate: the drop rate whose Bernoulli variance the noise matches, in
        ``[0, 1)``. A Python number is validated at once; a JAX scalar may be
        traced, and a traced rate outside ``[0, 1)`` makes the output all NaN
        (``checkify`` reports it).
      deterministic: if true, return ``x`` unchanged and draw no random bits.
      broadcast_dims: axes of ``x`` that share one noise value.

    Returns:
      An array of the same shape and dtype as ``x``.

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1)`` or NaN, or a
        ``broadcast_dims`` entry is out of range.
      TypeError: if ``x`` is not floating point, ``key`` is not a single key,
        or ``rate`` is not a real scalar.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import dropoutx as dx
      >>> x = jnp.ones((1000, 100))
      >>> y = dx.gaussian_dropout(jax.random.key(0), x, 0.5)
      >>> y.shape, y.dtype
      ((1000, 100), dtype('float32'))
      >>> bool(abs(y.mean() - 1) < 0.01), bool(abs(y.var() - 1) < 0.02)
      (True, True)
    """
    fn_name = "gaussian_dropout"
    x = _validate.floating_input(fn_name, x)
    rate_value = _validate.rate(fn_name, rate, allow_one=False)
    dims = _validate.broadcast_dims(fn_name, broadcast_dims, x.ndim)
    if _validate.deterministic(fn_name, deterministic) or rate_value == 0.0:
        return x
    key = _random.check_key(fn_name, key)
    if rate_value is not None:
        rate = jnp.asarray(rate_value, jnp.float32)
        stddev = jnp.asarray(math.sqrt(rate_value / (1.0 - rate_value)))
    else:
        rate = jnp.asarray(rate)
        # Both `where`s keep every gradient finite at rate 0 (infinite slope)
        # and at rate 1 (division by zero); out-of-range rates give NaN below.
        positive = (rate > 0) & (rate < 1)
        variance = jnp.where(positive, rate / jnp.where(positive, 1 - rate, 1), 1)
        stddev = jnp.where(positive, jnp.sqrt(variance), 0)
    return _noisy(
        key,
        x,
        rate,
        stddev,
        fn_name=fn_name,
        arg_name="rate",
        multiplicative=True,
        broadcast_dims=dims,
    )


def gaussian_noise(
    key: Any,
    x: ArrayLike,
    stddev: ArrayLike,
    *,
    deterministic: bool = False,
) -> jax.Array:
    """Additive Gaussian noise: ``x + stddev * eps``, ``eps ~ N(0, 1)``.

    While training ``y = x + stddev * eps``; at inference ``y = x``. The noise
    is drawn in float32 and equals ``jax.random.normal(key, x.shape)``; the sum
    is computed in float32 (float64 for float64 input) and rounded once. The
    gradient with respect to ``x`` is 1, and with respect to a traced
    ``stddev`` it is ``eps``.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true.
      x: the activations, of any floating dtype and shape.
      stddev: the noise standard deviation, ``>= 0`` and finite. A Python
        number is validated at once; a traced value that is negative, NaN or
        infinite makes the output all NaN (``checkify`` reports it).
      deterministic: if true, return ``x`` unchanged and draw no random bits.

    Returns:
      An array of the same shape and dtype as ``x``.

    Raises:
      ValueError: if a concrete ``stddev`` is negative, NaN or infinite.
      TypeError: if ``x`` is not floating point, ``key`` is not a single key,
        or ``stddev`` is not a real scalar.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import dropoutx as dx
      >>> y = dx.gaussian_noise(jax.random.key(0), jnp.zeros((1000, 100)), 0.1)
      >>> y.dtype, bool(abs(y.std() - 0.1) < 0.001)
      (dtype('float32'), True)
    """
    fn_name = "gaussian_noise"
    x = _validate.floating_input(fn_name, x)
    stddev_value = _validate.stddev(fn_name, stddev)
    if _validate.deterministic(fn_name, deterministic) or stddev_value == 0.0:
        return x
    key = _random.check_key(fn_name, key)
    stddev = jnp.asarray(stddev, jnp.float32 if stddev_value is not None else None)
    return _noisy(key, x, stddev, stddev, fn_name=fn_name, arg_name="stddev", multiplicative=False)
