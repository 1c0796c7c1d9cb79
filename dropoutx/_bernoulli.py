"""Bernoulli dropout: every transform that applies a keep mask and a scale.

Inverted, vanilla and annealed dropout, drop path and spatial dropout are one
computation, ``where(mask, x / (1 - rate), 0)`` (or its unscaled and
weight-scaled forms), with the mask shared along different axes; they all run
the one jitted body :func:`_masked`, so they share its compilations. The mask
itself is :func:`keep_mask`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropoutx import _dtypes, _random, _traced, _validate
from dropoutx._validate import KeyLike

# --- the shared body ---------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("broadcast_dims", "rescale"))
def _masked(
    key: jax.Array,
    x: jax.Array,
    rate: jax.Array,
    keep: jax.Array,
    *,
    broadcast_dims: tuple[int, ...],
    rescale: bool,
) -> jax.Array:
    """``where(mask, x / keep, 0)`` (or ``where(mask, x, 0)``), for any rate.

    The body runs under ``jax.checkpoint``, so reverse-mode autodiff saves only
    the key and the scalars and regenerates the mask in the backward pass.
    """
    dtype = _dtypes.compute_dtype(x.dtype)

    def apply(key: jax.Array, x: jax.Array, rate: jax.Array, keep: jax.Array) -> jax.Array:
        sharding = jax.typeof(x).sharding
        kept = _random.draw_keep_mask(key, x.shape, rate, broadcast_dims, sharding)
        if rescale:
            # The second `where` keeps the division finite at keep == 0, where
            # every unit is dropped anyway; otherwise its gradient is NaN.
            safe_keep = jnp.where(keep > 0, keep, 1).astype(dtype)
            # Selecting before the one rounding to x.dtype gives the same
            # values, and XLA's CPU code for bfloat16 input is faster this way.
            return jnp.where(kept, x.astype(dtype) / safe_keep, 0).astype(x.dtype)
        return jnp.where(kept, x, jnp.zeros((), x.dtype))

    return jax.checkpoint(apply)(key, x, rate, keep)


@jax.jit
def _weight_scaled(x: jax.Array, keep: jax.Array) -> jax.Array:
    """``x * keep``, computed in float32 (float64 for float64 input), rounded once."""
    dtype = _dtypes.compute_dtype(x.dtype)
    return (x.astype(dtype) * keep.astype(dtype)).astype(x.dtype)


def _bernoulli_dropout(
    fn_name: str, args: _validate.Arguments, rate: ArrayLike, *, rescale: bool
) -> jax.Array:
    """Dispatches checked arguments to the static shortcuts or the jitted bodies.

    ``rate`` is the user's rate, used when it is traced (``args.param`` is
    ``None``); a traced rate out of range gives NaN and a checkify report.
    """
    x = args.x
    if args.param == 0.0 or (args.deterministic and rescale):
        return x
    if args.param == 1.0 and not args.deterministic:
        return jnp.zeros_like(x)
    # 1 - rate is taken in Python for a Python rate, as the contract's
    # `x / (1 - rate)` does, and in the rate's own dtype for a traced one.
    if args.param is not None:
        rate = jnp.asarray(args.param, jnp.float32)
        keep = jnp.asarray(1.0 - args.param)
    else:
        rate = jnp.asarray(rate)
        keep = 1 - rate
    if args.deterministic:
        y = _weight_scaled(x, keep)
    else:
        y = _masked(args.key, x, rate, keep, broadcast_dims=args.broadcast_dims, rescale=rescale)
    if args.param is None:
        y = _traced.guard(fn_name, "rate", y, rate, "[0, 1]")
    return _dtypes.like_input(y, x)


# --- inverted, vanilla and annealed dropout -------------------------------------------


def inverted_dropout(
    key: KeyLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
    broadcast_dims: Iterable[int] = (),
) -> jax.Array:
    """Inverted dropout: zero units with probability ``rate``, rescale the rest.

    While training, ``y = where(mask, x / (1 - rate), 0)`` with
    ``mask ~ Bernoulli(1 - rate)``, so ``E[y] = x``; at inference ``y = x``.
    This is the dropout of Flax, Keras and PyTorch.

    The mask is :func:`keep_mask`: each unit compares 16 random bits with
    ``round(rate * 2**16)``, so the drop probability is within ``2**-17`` of
    the float32 rate and ``E[y] = x`` holds to a relative ``2**-17 / (1 -
    rate)``. The scale is computed in float32 (float64 for float64 input) and
    rounded once, so a kept value equals ``(x.astype(float32) / (1 -
    rate)).astype(x.dtype)`` exactly. That rounding can overflow: in float16 a kept value beyond
    ``65504 * (1 - rate)`` becomes inf (65504 at rate 0.5 gives inf), as the
    formula and Flax's dropout give; use bfloat16 or float32 for activations
    that large.

    The gradient with respect to ``x`` is ``mask / (1 - rate)``, computed by
    regenerating the mask from the key: no per-element residual is stored for
    the backward pass. With respect to a traced ``rate`` it is the derivative of
    the scale with the mask held fixed, ``where(mask, x / (1 - rate)**2, 0)``;
    the mask itself is a step function of the rate and contributes nothing.

    Args:
      key: a typed key (``jax.random.key``) or a raw ``uint32[2]`` key
        (``jax.random.PRNGKey``). Ignored, and may be ``None``, when
        ``deterministic`` is true or a concrete ``rate`` is 0 or 1 (no random
        bits are drawn then).
      x: the activations, a floating JAX or NumPy array of any shape (or a
        Python float, whose weak type is kept). Lists are rejected, as by
        ``jax.numpy``.
      rate: the probability of dropping each unit, in ``[0, 1]``. A Python
        number (``fractions.Fraction`` and ``decimal.Decimal`` included) is
        validated at once; a JAX scalar may be traced, and changing
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
      TypeError: if ``x`` is not a floating-point array, ``key`` is not a
        single key, ``rate`` is not a real scalar, or ``broadcast_dims`` is not
        an iterable of ints.

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
    args = _validate.arguments("inverted_dropout", key, x, rate, deterministic, broadcast_dims)
    return _bernoulli_dropout("inverted_dropout", args, rate, rescale=True)


dropout = inverted_dropout
"""Alias of :func:`inverted_dropout`, the usual default."""


def vanilla_dropout(
    key: KeyLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
    broadcast_dims: Iterable[int] = (),
) -> jax.Array:
    """Vanilla dropout: zero units while training, scale by ``1 - rate`` at inference.

    While training, ``y = where(mask, x, 0)`` with no rescaling; at inference
    ``y = x * (1 - rate)``, the weight-scaling rule of Srivastava et al. (2014,
    "Dropout: a simple way to prevent neural networks from overfitting"). Both
    give the same expected activation, ``(1 - rate) * x``.

    The mask is the one :func:`inverted_dropout` draws for the same key, shape
    and rate, and ``x`` is accepted as there. The inference scale is computed
    in float32 (float64 for float64 input) and rounded once. The gradient is
    ``mask`` while training and ``1 - rate`` at inference; no mask is stored
    for the backward pass.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true or a concrete ``rate`` is 0 or 1.
      x: the activations, a floating array of any shape, accepted as by
        :func:`inverted_dropout`.
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
      >>> x = jnp.full((4, 8), 3.0, jnp.float32)
      >>> y = dx.vanilla_dropout(jax.random.key(0), x, 0.25)
      >>> sorted(set(y.ravel().tolist()))  # no rescaling while training
      [0.0, 3.0]
      >>> dx.vanilla_dropout(None, x, 0.25, deterministic=True)[0, :3]
      Array([2.25, 2.25, 2.25], dtype=float32)
    """
    args = _validate.arguments("vanilla_dropout", key, x, rate, deterministic, broadcast_dims)
    return _bernoulli_dropout("vanilla_dropout", args, rate, rescale=False)


def annealed_dropout(
    key: KeyLike | None,
    x: ArrayLike,
    step: ArrayLike,
    schedule: Callable[[Any], ArrayLike],
    *,
    deterministic: bool = False,
    broadcast_dims: Iterable[int] = (),
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
        ``deterministic`` is true or the scheduled rate is a concrete 0 or 1.
      x: the activations, a floating array of any shape, accepted as by
        :func:`inverted_dropout`.
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
    fn_name = "annealed_dropout"
    schedule = _validate.schedule(fn_name, schedule)
    if _validate.static_bool(fn_name, "deterministic", deterministic):
        x = _validate.floating_input(fn_name, x)
        _validate.broadcast_dims(fn_name, broadcast_dims, x.ndim)
        return x
    rate = _absorb_schedule_rounding(schedule(step))
    args = _validate.arguments(fn_name, key, x, rate, False, broadcast_dims)
    return _bernoulli_dropout(fn_name, args, rate, rescale=True)


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


# --- drop path and spatial dropout: the mask shared along fixed axes -------------------


def drop_path(
    key: KeyLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
    scale_by_keep: bool = True,
) -> jax.Array:
    """Drop path (stochastic depth): drop whole examples of a residual branch.

    One keep decision per example along axis 0 applies to the whole example
    (Huang et al. 2016, "Deep Networks with Stochastic Depth"): while training

        y[i] = where(mask[i], x[i] / (1 - rate), 0),   mask ~ Bernoulli(1 - rate),

    or ``where(mask[i], x[i], 0)`` when ``scale_by_keep`` is false. At
    inference ``y = x`` (either way, as in timm's ``drop_path``). Apply it to
    a residual branch: ``x + drop_path(key, branch(x), rate)``.

    This is :func:`inverted_dropout` (or, unscaled, the training pass of
    :func:`vanilla_dropout`) with ``broadcast_dims`` every axis but 0, so
    ``mask`` equals ``keep_mask(key, (x.shape[0],), rate)``, the scale is
    computed in float32 and rounded once, a rate of 0 or 1 gives no NaN, and
    the gradient is ``mask / (1 - rate)`` (or ``mask``), regenerated from the
    key in the backward pass. As there, a float16 value scaled beyond 65504
    becomes inf.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true or a concrete ``rate`` is 0 or 1.
      x: the activations, of any floating dtype, with the batch on axis 0
        (rank at least 1). Under ``jax.vmap`` over examples, call it on the
        batch instead, or use :func:`inverted_dropout` with ``broadcast_dims``
        every axis.
      rate: the probability of dropping each example, in ``[0, 1]``; a Python
        number or a (possibly traced) JAX scalar, as in
        :func:`inverted_dropout`.
      deterministic: if true, return ``x`` unchanged and draw no random bits.
      scale_by_keep: if true, scale kept examples by ``1 / (1 - rate)`` so that
        ``E[y] = x``.

    Returns:
      An array of the same shape and dtype as ``x``.

    Raises:
      ValueError: if ``x`` is a scalar, or a concrete ``rate`` is outside
        ``[0, 1]`` or NaN.
      TypeError: if ``x`` is not floating point, ``key`` is not a single key,
        ``rate`` is not a real scalar, or ``scale_by_keep`` is not a bool.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import dropoutx as dx
      >>> x = jnp.ones((8, 3, 4), jnp.bfloat16)
      >>> y = dx.drop_path(jax.random.key(0), x, 0.5)
      >>> y.shape, y.dtype
      ((8, 3, 4), dtype(bfloat16))
      >>> per_example = y.reshape(8, -1)
      >>> bool((per_example == per_example[:, :1]).all())  # whole examples
      True
      >>> sorted(set(y.ravel().tolist()))  # dropped, or kept and scaled by 1 / 0.5
      [0.0, 2.0]
    """
    fn_name = "drop_path"
    x = _validate.batched_input(fn_name, _validate.floating_input(fn_name, x))
    rescale = _validate.static_bool(fn_name, "scale_by_keep", scale_by_keep)
    every_axis_but_batch = range(1, x.ndim)
    args = _validate.arguments(fn_name, key, x, rate, deterministic, every_axis_but_batch)
    if args.deterministic:  # the identity, scaled or not
        return args.x
    return _bernoulli_dropout(fn_name, args, rate, rescale=rescale)


def spatial_dropout(
    key: KeyLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
    channel_axis: int = -1,
    batch_axis: int | None = 0,
) -> jax.Array:
    """Spatial dropout: drop whole feature maps (channels) of each example.

    Inverted dropout with one mask value per (example, channel), shared over
    every other (spatial) axis, as Keras ``SpatialDropout1D/2D/3D`` and
    PyTorch ``Dropout1d/2d/3d`` (Tompson et al. 2015, "Efficient object
    localization using convolutional networks"): neighbouring activations of a
    feature map are strongly correlated, so dropping them one by one barely
    regularises. It is exactly ``inverted_dropout(key, x, rate,
    broadcast_dims=spatial_axes)``:

    ======================  =================  ====================
    layout                  ``channel_axis``   ``broadcast_dims``
    ======================  =================  ====================
    1D ``(N, W, C)``        ``-1`` (default)   ``(1,)``
    2D ``(N, H, W, C)``     ``-1`` (default)   ``(1, 2)``
    3D ``(N, D, H, W, C)``  ``-1`` (default)   ``(1, 2, 3)``
    1D ``(N, C, W)``        ``1``              ``(2,)``
    2D ``(N, C, H, W)``     ``1``              ``(2, 3)``
    3D ``(N, C, D, H, W)``  ``1``              ``(2, 3, 4)``
    ======================  =================  ====================

    Flax convolutions are channels-last, the default here. Scaling, dtypes and
    float16 overflow are as in :func:`inverted_dropout`. For alpha dropout
    of feature maps, pass the same ``broadcast_dims`` to :func:`alpha_dropout`.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true or a concrete ``rate`` is 0 or 1.
      x: the activations, of any floating dtype.
      rate: the probability of dropping each channel, in ``[0, 1]``; a Python
        number or a (possibly traced) JAX scalar, as in
        :func:`inverted_dropout`.
      deterministic: if true, return ``x`` unchanged and draw no random bits.
      channel_axis: the channel axis: ``-1`` for channels-last (NWC, NHWC,
        NDHWC), ``1`` for channels-first (NCW, NCHW, NCDHW).
      batch_axis: the batch axis, whose examples get independent masks, or
        ``None`` for an unbatched input (e.g. one example under ``jax.vmap``,
        with one key per example).

    Returns:
      An array of the same shape and dtype as ``x``.

    Raises:
      ValueError: if ``channel_axis`` or ``batch_axis`` is out of range or
        they coincide, or a concrete ``rate`` is outside ``[0, 1]`` or NaN.
      TypeError: if ``x`` is not floating point, ``key`` is not a single key,
        ``rate`` is not a real scalar, or an axis is not an int.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import dropoutx as dx
      >>> x = jnp.ones((2, 5, 5, 16))  # NHWC
      >>> y = dx.spatial_dropout(jax.random.key(0), x, 0.5)
      >>> y.shape, y.dtype
      ((2, 5, 5, 16), dtype('float32'))
      >>> bool((y == y[:, :1, :1, :]).all())  # constant over H and W
      True
      >>> same = dx.inverted_dropout(jax.random.key(0), x, 0.5, broadcast_dims=(1, 2))
      >>> bool((y == same).all())
      True
    """
    fn_name = "spatial_dropout"
    x = _validate.floating_input(fn_name, x)
    axes = _validate.channel_and_batch_axes(fn_name, channel_axis, batch_axis, x.ndim)
    spatial_axes = [axis for axis in range(x.ndim) if axis not in axes]
    args = _validate.arguments(fn_name, key, x, rate, deterministic, spatial_axes)
    return _bernoulli_dropout(fn_name, args, rate, rescale=True)


# --- the mask -----------------------------------------------------------------------

_jitted_draw_keep_mask = jax.jit(
    _random.draw_keep_mask, static_argnames=("shape", "broadcast_dims")
)


def keep_mask(
    key: KeyLike | None,
    shape: Sequence[int],
    rate: ArrayLike,
    *,
    broadcast_dims: Iterable[int] = (),
) -> jax.Array:
    """The boolean mask the Bernoulli transforms use: ``True`` means kept.

    ``P(True) = 1 - round(rate * 2**16) / 2**16`` for each position, within
    ``2**-17`` of ``1 - rate``, shared along ``broadcast_dims``. For the same
    key, shape, rate and ``broadcast_dims`` it is exactly the mask that
    :func:`inverted_dropout` and :func:`vanilla_dropout` apply.

    How it is drawn: let ``mask_shape`` be ``shape`` with the broadcast axes
    removed, and its other axes of length 1 too; ``row`` is the row-major
    index of a position over all axes of ``mask_shape`` but the last, and
    ``c`` its index along the last. The position takes the 16-bit
    lane ``c % 4`` of the Threefry-2x32 block (Salmon et al. 2011; 13
    rounds, the fewest the authors found to pass the BigCrush battery, where
    ``jax.random`` uses 20) of the 64-bit counter ``(row, c // 4)`` under ``key``,
    and is kept if that lane is at least ``round(rate * 2**16)``. So one
    block serves four neighbours, the mask depends only on the key, the shape
    and the rate (not on jit, sharding or ``jax_threefry_partitionable``),
    and no two positions of an array share a lane. Keys of other
    implementations (rbg, philox, ...) compare the top 16 bits of
    ``jax.random.bits(key, mask_shape)`` instead.

    Args:
      key: a typed or raw PRNG key; may be ``None`` when a concrete ``rate`` is
        0 or 1.
      shape: the shape of the mask, a sequence of ints.
      rate: the drop probability, in ``[0, 1]``; a Python number or a
        (possibly traced) JAX scalar. A traced rate outside ``[0, 1]`` (or
        NaN) drops every unit, and ``checkify`` reports it.
      broadcast_dims: axes that share one mask value.

    Returns:
      A ``bool`` array of shape ``shape``.

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1]`` or NaN, or a
        ``broadcast_dims`` entry is out of range.
      ValueError: if a ``shape`` entry is negative.
      TypeError: if ``key`` is not a single key, ``rate`` is not a real
        scalar, or ``shape`` or ``broadcast_dims`` is not a sequence of ints.

    Example:
      >>> import jax
      >>> import dropoutx as dx
      >>> mask = dx.keep_mask(jax.random.key(0), (3, 4), 0.5, broadcast_dims=(0,))
      >>> mask.shape, mask.dtype
      ((3, 4), dtype('bool'))
      >>> bool((mask == mask[0]).all())  # one value per column, shared by the rows
      True
    """
    fn_name = "keep_mask"
    shape = _validate.shape(fn_name, shape)
    rate_value = _validate.rate(fn_name, rate)
    dims = _validate.broadcast_dims(fn_name, broadcast_dims, len(shape))
    if key is not None or rate_value not in (0.0, 1.0):
        key = _validate.key(
            fn_name, key, required=" (it may be None only when the rate is a concrete 0 or 1)"
        )
    if rate_value == 0.0:
        return jnp.ones(shape, bool)
    if rate_value == 1.0:
        return jnp.zeros(shape, bool)
    if rate_value is not None:
        return _jitted_draw_keep_mask(key, shape, jnp.asarray(rate_value, jnp.float32), dims)
    rate = jnp.asarray(rate)
    _traced.report(fn_name, "rate", rate, "[0, 1]")
    return _jitted_draw_keep_mask(key, shape, rate, dims)
