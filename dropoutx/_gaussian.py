"""Gaussian dropout (multiplicative noise) and additive Gaussian noise.

Both run the one jitted body :func:`_noisy`, which draws ``eps ~ N(0, 1)``
from the key (``_random.standard_normal``) and applies it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropoutx import _dtypes, _random, _traced, _validate
from dropoutx._validate import KeyLike


@functools.partial(jax.jit, static_argnames=("multiplicative", "broadcast_dims"))
def _noisy(
    key: jax.Array,
    x: jax.Array,
    stddev: jax.Array,
    *,
    multiplicative: bool,
    broadcast_dims: tuple[int, ...] = (),
) -> jax.Array:
    """``x * (1 + stddev * eps)`` or ``x + stddev * eps``, ``eps ~ N(0, 1)``.

    ``eps`` has one value per position of the non-broadcast axes. The body
    runs under ``jax.checkpoint``: the noise is regenerated from the key in the
    backward pass instead of being stored.
    """
    dtype = _dtypes.compute_dtype(x.dtype)
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
    return jax.checkpoint(apply)(key, x, stddev)


def gaussian_dropout(
    key: KeyLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
    broadcast_dims: Iterable[int] = (),
) -> jax.Array:
    """Gaussian dropout: multiply by ``N(1, rate / (1 - rate))`` noise.

    While training ``y = x * (1 + sqrt(rate / (1 - rate)) * eps)`` with
    ``eps ~ N(0, 1)``; at inference ``y = x``. The multiplier has the mean (1)
    and variance (``rate / (1 - rate)``) of inverted dropout's ``mask / (1 -
    rate)``, as in Srivastava et al. (2014, section 10). The noise is drawn in
    float32, each sample from its own 13-round Threefry-2x32 block by the
    Box-Muller transform (``docs/masks.md``); it
    does not depend on ``jax_threefry_partitionable``, and is not
    ``jax.random.normal``'s. The product is computed in float32 (float64 for
    float64 input) and rounded once; in float16 a result beyond 65504 becomes
    inf, as the formula gives.

    A Python rate just below 1 is valid, and gives the finite (if very noisy)
    result of the formula: the noise scale ``sqrt(rate / (1 - rate))`` is
    computed in Python's float64, so a rate such as ``1 - 1e-9``, which
    float32 would round to 1, still gives ``sigma ~= 31623`` rather than NaN.

    The gradient with respect to ``x`` is the multiplier, regenerated from the
    key in the backward pass (nothing per-element is stored). With respect to a
    traced ``rate`` it is the pathwise derivative ``x * eps * d sigma / d
    rate``; at ``rate == 0``, where ``sigma = sqrt(rate / (1 - rate))`` has an
    infinite slope, it is defined as 0 so that no gradient is inf or NaN.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true or a concrete ``rate`` is 0.
      x: the activations, a floating array of any shape, accepted as by
        :func:`inverted_dropout`.
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
    kind = _validate.GAUSSIAN_RATE
    args = _validate.arguments(fn_name, key, x, rate, deterministic, broadcast_dims, kind=kind)
    x = args.x
    if args.deterministic or args.param == 0.0:
        return x
    if args.param is not None:
        stddev = jnp.asarray(math.sqrt(args.param / (1.0 - args.param)))
        return _dtypes.like_input(
            _noisy(args.key, x, stddev, multiplicative=True, broadcast_dims=args.broadcast_dims),
            x,
        )
    traced_rate = jnp.asarray(rate)
    # Both `where`s keep every gradient finite at rate 0 (infinite slope) and
    # at rate 1 (division by zero); out-of-range rates give NaN below.
    positive = (traced_rate > 0) & (traced_rate < 1)
    variance = jnp.where(positive, traced_rate / jnp.where(positive, 1 - traced_rate, 1), 1)
    stddev = jnp.where(positive, jnp.sqrt(variance), 0)
    y = _noisy(args.key, x, stddev, multiplicative=True, broadcast_dims=args.broadcast_dims)
    y = _traced.guard(fn_name, "rate", y, traced_rate, "[0, 1)")
    return _dtypes.like_input(y, x)


def gaussian_noise(
    key: KeyLike | None,
    x: ArrayLike,
    stddev: ArrayLike,
    *,
    deterministic: bool = False,
) -> jax.Array:
    """Additive Gaussian noise: ``x + stddev * eps``, ``eps ~ N(0, 1)``.

    While training ``y = x + stddev * eps``; at inference ``y = x``. The noise
    is :func:`gaussian_dropout`'s. The sum is computed in float32 (float64 for
    float64 input) and rounded once. The gradient with respect to ``x`` is 1,
    and with respect to a traced ``stddev`` it is ``eps``.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true or a concrete ``stddev`` is 0.
      x: the activations, a floating array of any shape, accepted as by
        :func:`inverted_dropout`.
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
    args = _validate.arguments(fn_name, key, x, stddev, deterministic, kind=_validate.STDDEV)
    x = args.x
    if args.deterministic or args.param == 0.0:
        return x
    if args.param is None:
        scale = jnp.asarray(stddev)  # traced: kept in its own dtype
    else:
        scale = jnp.asarray(args.param, jnp.float32)
    y = _noisy(args.key, x, scale, multiplicative=False)
    if args.param is None:
        y = _traced.guard(fn_name, "stddev", y, scale, "[0, inf)")
    return _dtypes.like_input(y, x)
