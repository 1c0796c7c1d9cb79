"""Alpha dropout: the dropout of self-normalizing (SELU) networks.

It draws the same keep mask as the Bernoulli transforms (``_random``) but
replaces dropped units by SELU's saturation value and applies an affine
correction, so it has a jitted body of its own.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropoutx import _dtypes, _random, _traced, _validate
from dropoutx._validate import KeyLike

# SELU's constants (Klambauer et al. 2017), the values of `jax.nn.selu`.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
# SELU's negative saturation, lim selu(x) as x -> -inf: alpha' = -scale * alpha.
SELU_SATURATION = -_SELU_SCALE * _SELU_ALPHA


def _alpha_affine(rate: Any, xp: Any = jnp) -> tuple[Any, Any, Any]:
    """``(scale, offset, dropped)``: kept units map to ``scale * (x + offset)``.

    ``scale = ((1 - rate) * (1 + rate * alpha'**2)) ** -0.5`` and ``offset =
    -alpha' * rate`` are Klambauer et al.'s ``a`` and ``b / a``; dropped units
    take ``dropped = scale * (alpha' + offset) = a * alpha' + b``. At ``rate ==
    1`` (keep 0), where ``a`` is infinite, all three are 0: ``dropped`` is its
    limit, and the second ``where`` keeps every gradient finite.

    ``xp`` is ``numpy`` for a Python rate (computed in float64 and rounded
    once by the caller) or ``jax.numpy`` for a traced one.
    """
    keep = 1 - rate
    positive = keep > 0
    safe_keep = xp.where(positive, keep, 1)
    scale = xp.where(positive, 1 / xp.sqrt(safe_keep * (1 + rate * SELU_SATURATION**2)), 0)
    offset = -SELU_SATURATION * rate
    dropped = scale * (SELU_SATURATION + offset)
    return scale, offset, dropped


@functools.partial(jax.jit, static_argnames=("broadcast_dims",))
def _alpha_masked(
    key: jax.Array,
    x: jax.Array,
    rate: jax.Array,
    coefficients: tuple[jax.Array, jax.Array, jax.Array],
    *,
    broadcast_dims: tuple[int, ...],
) -> jax.Array:
    """``where(mask, scale * (x + offset), dropped)``, rounded once.

    The coefficients come in precomputed, so the only per-element arithmetic
    is an add followed by a multiply: no multiply-add that XLA could contract
    differently in different programs, so eager and jitted calls agree bit for
    bit. The body runs under ``jax.checkpoint``: the backward pass regenerates
    the mask from the key, so nothing per-element is saved.
    """
    dtype = _dtypes.compute_dtype(x.dtype)

    def apply(
        key: jax.Array, x: jax.Array, rate: jax.Array, coefficients: tuple[jax.Array, ...]
    ) -> jax.Array:
        kept = _random.draw_keep_mask(key, x.shape, rate, broadcast_dims, jax.typeof(x).sharding)
        scale, offset, dropped = (c.astype(dtype) for c in coefficients)
        return jnp.where(kept, scale * (x.astype(dtype) + offset), dropped).astype(x.dtype)

    return jax.checkpoint(apply)(key, x, rate, coefficients)


def alpha_dropout(
    key: KeyLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
    broadcast_dims: Iterable[int] = (),
) -> jax.Array:
    """Alpha dropout: drop to SELU's saturation value, then restore mean and variance.

    The dropout of self-normalizing networks (Klambauer et al. 2017,
    "Self-Normalizing Neural Networks"). While training

        y = a * where(mask, x, alpha') + b,   mask ~ Bernoulli(1 - rate),

    with ``alpha' = -scale * alpha ~= -1.7581`` (SELU's negative saturation),
    ``a = ((1 - rate) * (1 + rate * alpha'**2)) ** -0.5`` and ``b = -a * alpha'
    * rate``, so inputs of mean 0 and variance 1 keep mean 0 and variance 1. At
    inference ``y = x``. With ``broadcast_dims`` over the spatial axes this is
    feature alpha dropout (PyTorch's ``FeatureAlphaDropout``).

    At ``rate == 1`` the output is all zeros, for a Python or a traced rate:
    every unit is dropped, and the dropped value ``a * alpha' + b = alpha' *
    sqrt((1 - rate) / (1 + rate * alpha'**2))`` tends to 0 as the rate tends to
    1 (PyTorch's ``alpha_dropout`` also returns zeros). The output then has
    variance 0, not 1: no affine map of a constant has variance 1.

    ``a``, ``b`` and the product are computed in float32 (float64 for float64
    input) and the result is rounded once (a float16 value whose result
    exceeds 65504 becomes inf, as the formula gives). The mask is the one
    :func:`inverted_dropout` draws for the same key, shape, rate and
    ``broadcast_dims``. The gradient with respect to ``x`` is ``a * mask``,
    regenerated from the key in the backward pass (nothing per-element is
    stored). With respect to a traced ``rate`` it is the derivative of ``a`` and
    ``b`` with the mask held fixed; at ``rate == 1``, where ``a`` is infinite,
    it is defined as 0, so no gradient is inf or NaN.

    Args:
      key: a typed key (``jax.random.key``) or a raw ``uint32[2]`` key
        (``jax.random.PRNGKey``). Ignored, and may be ``None``, when
        ``deterministic`` is true or a concrete ``rate`` is 0 or 1.
      x: the activations, a floating array of any shape, accepted as by
        :func:`inverted_dropout`; typically the output of ``jax.nn.selu``.
      rate: the probability of dropping each unit, in ``[0, 1]``. A Python
        number is validated at once; a JAX scalar may be traced, and changing
        it does not recompile. A traced rate outside ``[0, 1]`` (or NaN) makes
        the output all NaN, and ``checkify`` reports it.
      deterministic: if true, return ``x`` unchanged and draw no random bits.
      broadcast_dims: axes of ``x`` that share one mask value (the spatial
        axes, for feature alpha dropout).

    Returns:
      An array of the same shape and dtype as ``x``.

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1]`` or NaN, or a
        ``broadcast_dims`` entry is out of range.
      TypeError: if ``x`` is not floating point, ``key`` is not a single key,
        or ``rate`` is not a real scalar.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import dropoutx as dx
      >>> x = jax.random.normal(jax.random.key(1), (1000, 1000))
      >>> y = dx.alpha_dropout(jax.random.key(0), x, 0.2)
      >>> y.shape, y.dtype
      ((1000, 1000), dtype('float32'))
      >>> bool(abs(y.mean()) < 0.01), bool(abs(y.var() - 1) < 0.01)  # mean 0, variance 1
      (True, True)
      >>> bool((dx.alpha_dropout(jax.random.key(0), x, 1.0) == 0).all())
      True
    """
    fn_name = "alpha_dropout"
    args = _validate.arguments(fn_name, key, x, rate, deterministic, broadcast_dims)
    x = args.x
    if args.deterministic or args.param == 0.0:
        return x
    if args.param == 1.0:
        return jnp.zeros_like(x)
    dtype = _dtypes.compute_dtype(x.dtype)
    if args.param is not None:
        rate = jnp.asarray(args.param, jnp.float32)
        scale, offset, dropped = _alpha_affine(np.float64(args.param), np)
    else:
        rate = jnp.asarray(rate)
        scale, offset, dropped = _alpha_affine(rate.astype(dtype))
    coefficients = (
        jnp.asarray(scale, dtype),
        jnp.asarray(offset, dtype),
        jnp.asarray(dropped, dtype),
    )
    y = _alpha_masked(args.key, x, rate, coefficients, broadcast_dims=args.broadcast_dims)
    if args.param is None:
        y = _traced.guard(fn_name, "rate", y, rate, "[0, 1]")
    return _dtypes.like_input(y, x)
