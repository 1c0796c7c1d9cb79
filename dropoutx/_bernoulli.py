"""Bernoulli dropout: inverted, vanilla and annealed, and the keep mask."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropoutx import _core, _random, _validate


@functools.partial(jax.jit, static_argnames=("fn_name", "broadcast_dims", "rescale"))
def _masked(
    key: jax.Array,
    x: jax.Array,
    rate: jax.Array,
    keep: jax.Array,
    *,
    fn_name: str,
    broadcast_dims: tuple[int, ...],
    rescale: bool,
) -> jax.Array:
    """``where(mask, x / keep, 0)`` (or ``where(mask, x, 0)``), for any rate.

    The body runs under ``jax.checkpoint``, so reverse-mode autodiff saves only
    the key and the scalars and regenerates the mask in the backward pass.
    """
    dtype = _core.compute_dtype(x.dtype)

    def apply(key: jax.Array, x: jax.Array, rate: jax.Array, keep: jax.Array) -> jax.Array:
        sharding = jax.typeof(x).sharding
        kept = _random.keep_mask(key, x.shape, rate, broadcast_dims, sharding)
        if rescale:
            # The second `where` keeps the division finite at keep == 0, where
            # every unit is dropped anyway; otherwise its gradient is NaN.
            safe_keep = jnp.where(keep > 0, keep, 1).astype(dtype)
            x = (x.astype(dtype) / safe_keep).astype(x.dtype)
        return jnp.where(kept, x, jnp.zeros((), x.dtype))

    y = jax.checkpoint(apply)(key, x, rate, keep)
    return _core.guard_traced(fn_name, y, "rate", rate, _core.rate_in_range(rate), "[0, 1]")


@functools.partial(jax.jit, static_argnames=("fn_name",))
def _weight_scaled(x: jax.Array, rate: jax.Array, keep: jax.Array, *, fn_name: str) -> jax.Array:
    """``x * keep``, computed in float32 (float64 for float64 input), rounded once."""
    dtype = _core.compute_dtype(x.dtype)
    y = (x.astype(dtype) * keep.astype(dtype)).astype(x.dtype)
    return _core.guard_traced(fn_name, y, "rate", rate, _core.rate_in_range(rate), "[0, 1]")


def _bernoulli_dropout(
    fn_name: str,
    key: Any,
    x: ArrayLike,
    rate: ArrayLike,
    deterministic: bool,
    broadcast_dims: Sequence[int],
    *,
    rescale: bool,
) -> jax.Array:
    """Validates the arguments, then dispatches to the static shortcuts or ``_masked``."""
    x = _validate.floating_input(fn_name, x)
    rate_value = _validate.rate(fn_name, rate)
    dims = _validate.broadcast_dims(fn_name, broadcast_dims, x.ndim)
    deterministic = _validate.deterministic(fn_name, deterministic)
    if not deterministic:
        key = _random.check_key(fn_name, key)
    if rate_value == 0.0 or (deterministic and rescale):
        return x
    if rate_value == 1.0 and not deterministic:
        return jnp.zeros_like(x)
    # 1 - rate is taken in Python for a Python rate, as the contract's
    # `x / (1 - rate)` does, and in the rate's own dtype for a JAX scalar.
    rate = jnp.asarray(rate, jnp.float32 if rate_value is not None else None)
    keep = jnp.asarray(1.0 - rate_value) if rate_value is not None else 1 - rate
    if deterministic:
        return _weight_scaled(x, rate, keep, fn_name=fn_name)
    return _masked(key, x, rate, keep, fn_name=fn_name, broadcast_dims=dims, rescale=rescale)


def inverted_dropout(
    key: Any,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
    """Inverted dropout: zero units with probability ``rate``, rescale the rest.

    While training, ``y = where(mask, x / (1 - rate), 0)`` with
    ``mask ~ Bernoulli(1 - rate)``, so ``E[y] = x``; at inference ``y = x``.
    This is the dropout of Flax, Keras and PyTorch.

    The mask keeps a unit when the threefry bits ``jax.random.bits(key,
    shape)`` are at least ``floor(rate * 2**32)``, so the drop probability
    equals the float32 rate to within ``2**-32``. The scale is computed in
    float32 (float64 for float64 input) and rounded once, so a kept value
    equals ``(x.astype(float32) / (1 - rate)).astype(x.dtype)`` exactly.

    The gradient with respect to ``x`` is ``mask / (1 - rate)``, computed by
    regenerating the mask from the key: no per-element residual is stored for
    the backward pass. With respect to a traced ``rate`` it is the derivative of
    the scale with the mask held fixed, ``where(mask, x / (1 - rate)**2, 0)``;
    the mask itself is a step function of the rate and contributes nothing.

    Args:
      key: a typed key (``jax.random.key``) or a raw ``uint32[2]`` key
        (``jax.random.PRNGKey``). Ignored, and may be ``None``, when
        ``deterministic`` is true.
      x: the activations, of any floating dtype and shape.
      rate: the probability of dropping each unit, in ``[0, 1]``. A Python
        number is validated at once; a JAX scalar may be traced, and changing
        it does not recompile. A traced rate outside ``[0, 1]`` (or NaN) makes
        the output all NaN, and ``jax.experimental.checkify`` with
        ``errors=checkify.user_checks`` reports it.
      deterministic: if true, return ``x`` unchanged and draw no random bits.
      broadcast_dims: axes of ``x`` that share one mask value (e.g. the spatial
        axes, for channel dropout).

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
      >>> x = jnp.ones((4, 8), jnp.bfloat16)
      >>> y = dx.inverted_dropout(jax.random.key(0), x, 0.5)
      >>> y.shape, y.dtype
      ((4, 8), dtype(bfloat16))
      >>> sorted(set(y.ravel().tolist()))  # dropped units are 0, kept ones 1 / 0.5
      [0.0, 2.0]
      >>> bool((dx.inverted_dropout(None, x, 0.5, deterministic=True) == x).all())
      True
    """
    return _bernoulli_dropout(
        "inverted_dropout", key, x, rate, deterministic, broadcast_dims, rescale=True
    )


dropout = inverted_dropout
"""Alias of :func:`inverted_dropout`, the usual default."""


def vanilla_dropout(
    key: Any,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
    """Vanilla dropout: zero units while training, scale by ``1 - rate`` at inference.

    While training, ``y = where(mask, x, 0)`` with no rescaling; at inference
    ``y = x * (1 - rate)``, the weight-scaling rule of Srivastava et al. (2014,
    "Dropout: a simple way to prevent neural networks from overfitting"). Both
    give the same expected activation, ``(1 - rate) * x``.

    The mask is the one :func:`inverted_dropout` draws for the same key, shape
    and rate. The inference scale is computed in float32 (float64 for float64
    input) and rounded once. The gradient is ``mask`` while training and
    ``1 - rate`` at inference; no mask is stored for the backward pass.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true.
      x: the activations, of any floating dtype and shape.
      rate: the probability of dropping each unit, in ``[0, 1]``; a Python
        number or a (possibly traced) JAX scalar, as in
        :func:`inverted_dropout`.
      deterministic: if true, return ``x * (1 - rate)`` and draw no random
        bits.
      broadcast_dims: axes of ``x`` that share one mask value.

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
      >>> x = jnp.full((4, 8), 3.0)
      >>> y = dx.vanilla_dropout(jax.random.key(0), x, 0.25)
      >>> sorted(set(y.ravel().tolist()))  # no rescaling while training
      [0.0, 3.0]
      >>> dx.vanilla_dropout(None, x, 0.25, deterministic=True)[0, :3]
      Array([2.25, 2.25, 2.25], dtype=float32)
    """
    return _bernoulli_dropout(
        "vanilla_dropout", key, x, rate, deterministic, broadcast_dims, rescale=False
    )


def annealed_dropout(
    key: Any,
    x: ArrayLike,
    step: ArrayLike,
    schedule: Callable[[Any], ArrayLike],
    *,
    deterministic: bool = False,
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
    """Inverted dropout whose rate follows a schedule over training steps.

    ``y = inverted_dropout(key, x, schedule(step))``. Annealed dropout (Rennie,
    Goel & Thomas 2014, "Annealed dropout training of deep networks") decays
    the rate to zero over training, e.g. with
    ``optax.linear_schedule(0.5, 0.0, 10_000)``; any callable ``step -> rate``
    built from ``jnp`` operations works. ``step`` may be traced, so one
    compiled train step serves the whole run.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true.
      x: the activations, of any floating dtype and shape.
      step: the training step, a Python integer or a (possibly traced) JAX
        scalar.
      schedule: a callable mapping ``step`` to the drop rate, e.g. any optax
        schedule. A rate within 1e-6 outside ``[0, 1]`` is taken as the
        rounding error of a float32 schedule and moved onto the interval (optax's
        linear schedule ends at -7.45e-9 under jit); a rate further out raises
        when ``step`` is concrete and gives an all-NaN output when it is
        traced, as in :func:`inverted_dropout`.
      deterministic: if true, return ``x`` unchanged and draw no random bits.
      broadcast_dims: axes of ``x`` that share one mask value.

    Returns:
      An array of the same shape and dtype as ``x``.

    Raises:
      TypeError: if ``schedule`` is not callable, or as
        :func:`inverted_dropout`.
      ValueError: as :func:`inverted_dropout`, for the scheduled rate.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import dropoutx as dx
      >>> schedule = optax.linear_schedule(0.5, 0.0, transition_steps=100)
      >>> x = jnp.ones((2, 4))
      >>> y = dx.annealed_dropout(jax.random.key(0), x, 100, schedule)
      >>> bool((y == x).all())  # the rate has decayed to 0
      True
    """
    schedule = _validate.schedule("annealed_dropout", schedule)
    if _validate.deterministic("annealed_dropout", deterministic):
        return _validate.floating_input("annealed_dropout", x)
    rate = _absorb_schedule_rounding(schedule(step))
    return _bernoulli_dropout("annealed_dropout", key, x, rate, False, broadcast_dims, rescale=True)


# A schedule evaluated in float32 can miss its end point by a rounding error:
# optax.linear_schedule(0.5, 0.0, n) gives -7.45e-9 at step n under jit.
_SCHEDULE_ROUNDING = 1e-6


def _absorb_schedule_rounding(rate: Any) -> Any:
    """Moves a scheduled rate within 1e-6 outside ``[0, 1]`` onto the interval.

    Rates further out are left as they are, so they still raise (concrete) or
    give NaN (traced).
    """
    concrete = _validate.concrete_scalar("annealed_dropout", "rate", rate)
    if concrete is not None:
        if -_SCHEDULE_ROUNDING <= concrete <= 1 + _SCHEDULE_ROUNDING:
            return min(max(concrete, 0.0), 1.0)
        return rate
    rate = jnp.asarray(rate)
    near = (rate >= -_SCHEDULE_ROUNDING) & (rate <= 1 + _SCHEDULE_ROUNDING)
    return jnp.where(near, jnp.clip(rate, 0, 1), rate)


@functools.partial(jax.jit, static_argnames=("shape", "broadcast_dims"))
def _keep_mask(
    key: jax.Array, rate: jax.Array, *, shape: tuple[int, ...], broadcast_dims: tuple[int, ...]
) -> jax.Array:
    _core.check_traced("keep_mask", "rate", rate, _core.rate_in_range(rate), "[0, 1]")
    return _random.keep_mask(key, shape, rate, broadcast_dims)


def keep_mask(
    key: Any,
    shape: Sequence[int],
    rate: ArrayLike,
    *,
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
    """The boolean mask the Bernoulli transforms use: ``True`` means kept.

    ``P(True) = 1 - rate`` for each position, shared along ``broadcast_dims``.
    For the same key, shape, rate and ``broadcast_dims`` it is exactly the mask
    that :func:`inverted_dropout` and :func:`vanilla_dropout` apply, and it
    equals ``jax.random.bits(key, mask_shape) >= floor(rate * 2**32)``
    broadcast to ``shape``, where ``mask_shape`` is ``shape`` with the
    broadcast axes set to 1 (for threefry keys).

    Args:
      key: a typed or raw PRNG key.
      shape: the shape of the mask.
      rate: the drop probability, in ``[0, 1]``; a Python number or a
        (possibly traced) JAX scalar. A traced rate outside ``[0, 1]`` (or
        NaN) drops every unit, and ``checkify`` reports it.
      broadcast_dims: axes that share one mask value.

    Returns:
      A ``bool`` array of shape ``shape``.

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1]`` or NaN, or a
        ``broadcast_dims`` entry is out of range.
      TypeError: if ``key`` is not a single key or ``rate`` is not a real
        scalar.

    Example:
      >>> import jax
      >>> import dropoutx as dx
      >>> mask = dx.keep_mask(jax.random.key(0), (3, 4), 0.5, broadcast_dims=(0,))
      >>> mask.shape, mask.dtype
      ((3, 4), dtype('bool'))
      >>> bool((mask == mask[0]).all())  # one value per column, shared by the rows
      True
    """
    shape = _validate.shape("keep_mask", shape)
    rate_value = _validate.rate("keep_mask", rate)
    dims = _validate.broadcast_dims("keep_mask", broadcast_dims, len(shape))
    key = _random.check_key("keep_mask", key)
    if rate_value == 0.0:
        return jnp.ones(shape, bool)
    if rate_value == 1.0:
        return jnp.zeros(shape, bool)
    rate = jnp.asarray(rate, jnp.float32 if rate_value is not None else None)
    return _keep_mask(key, rate, shape=shape, broadcast_dims=dims)
