"""Sequence and structured dropout: DropBlock, zoneout and LayerDrop.

Every mask comes from ``_random.draw_keep_mask``, the same Threefry bits as the
rest of the library, and every check from ``_validate``.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropoutx import _dtypes, _random, _traced, _validate


def _traced_rate(rate: ArrayLike, rate_value: float | None) -> jax.Array:
    """The rate as a JAX scalar: float32 for a Python rate, its own dtype if traced."""
    return jnp.asarray(rate, jnp.float32 if rate_value is not None else None)


# --- DropBlock ------------------------------------------------------------------


def _seed_probability_factor(spatial_sizes: tuple[int, ...], block_size: int) -> float:
    """``gamma / rate = prod_i size_i / (block_size * (size_i - block_size + 1))``."""
    return math.prod(size / (block_size * (size - block_size + 1)) for size in spatial_sizes)


def _block_drop_mask(
    key: jax.Array,
    shape: tuple[int, ...],
    gamma: jax.Array,
    block_size: int,
    spatial_axes: tuple[int, ...],
) -> jax.Array:
    """Boolean mask of ``shape``, ``True`` where a unit lies in a dropped block.

    Seeds are drawn where a whole block fits: along each spatial axis at
    positions ``0 .. size - block_size``, each a drop with probability
    ``gamma``. A seed at ``p`` drops ``p .. p + block_size - 1`` along every
    spatial axis. The block max-pool is separable, so it is one
    ``reduce_window`` per spatial axis (``n * block_size`` comparisons per unit
    rather than ``block_size**n``); padding by ``block_size - 1`` on both sides
    brings each axis back from the seed count to the map size.
    """
    seed_shape = tuple(
        size - block_size + 1 if axis in spatial_axes else size for axis, size in enumerate(shape)
    )
    dropped = ~_random.draw_keep_mask(key, seed_shape, gamma, ())
    if block_size == 1:
        return dropped
    ndim = len(shape)
    for axis in spatial_axes:
        window = tuple(block_size if other == axis else 1 for other in range(ndim))
        padding = tuple(
            (block_size - 1, block_size - 1) if other == axis else (0, 0) for other in range(ndim)
        )
        dropped = jax.lax.reduce_window(
            dropped, np.bool_(False), jax.lax.bitwise_or, window, (1,) * ndim, padding
        )
    return dropped


@functools.partial(jax.jit, static_argnames=("block_size", "spatial_axes", "gamma_factor"))
def _drop_block_masked(
    key: jax.Array,
    x: jax.Array,
    rate: jax.Array,
    *,
    block_size: int,
    spatial_axes: tuple[int, ...],
    gamma_factor: float,
) -> jax.Array:
    """``where(dropped, 0, x * size / kept_count)``, rounded once.

    The body runs under ``jax.checkpoint``: the backward pass regenerates the
    mask and the count from the key, so nothing per-element is saved.
    """
    dtype = _dtypes.compute_dtype(x.dtype)

    def apply(key: jax.Array, x: jax.Array, rate: jax.Array) -> jax.Array:
        gamma = rate.astype(jnp.float32) * np.float32(gamma_factor)
        # At rate 1 every unit is dropped (the seeds alone would leave some).
        dropped = _block_drop_mask(key, x.shape, gamma, block_size, spatial_axes) | (rate >= 1)
        count_dtype = jnp.int32 if x.size < 2**31 else jnp.float32
        kept_count = jnp.sum(~dropped, dtype=count_dtype).astype(dtype)
        # The scale is a function of the mask alone; the count is a step
        # function of the rate and carries no gradient. The second `where`
        # keeps the division finite when nothing is kept.
        safe_count = jnp.where(kept_count > 0, kept_count, 1)
        scale = jnp.where(kept_count > 0, np.asarray(x.size, dtype) / safe_count, 0)
        scale = jax.lax.stop_gradient(scale)
        return jnp.where(dropped, jnp.zeros((), x.dtype), (x.astype(dtype) * scale).astype(x.dtype))

    y = jax.checkpoint(apply)(key, x, rate)
    return _traced.guard("drop_block", "rate", y, rate, "[0, 1]")


def drop_block(
    key: _validate.KeyLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    block_size: int = 7,
    deterministic: bool = False,
    channel_axis: int = -1,
) -> jax.Array:
    """DropBlock: drop contiguous square (cubic, ...) blocks of each feature map.

    DropBlock (Ghiasi, Lin & Le 2018, "DropBlock: a regularization method for
    convolutional networks") drops whole ``block_size``-wide blocks of a
    feature map rather than single units, which neighbouring units of a
    convolutional map would otherwise fill in. ``x`` holds the batch on axis 0,
    the channels on ``channel_axis``, and one or more spatial axes (every other
    axis), so 1D, 2D and 3D maps, channels-last or channels-first, all work.

    Independently for each example and channel, a seed is drawn at every
    position where a whole block fits (``size_i - block_size + 1`` positions
    along spatial axis ``i``) with probability

        gamma = rate / block_size**n * prod_i size_i / (size_i - block_size + 1),

    the paper's formula generalised to ``n`` spatial axes: the expected number
    of dropped units, counted with multiplicity, is then ``rate`` times the
    map size. A seed at ``p`` drops the block ``p .. p + block_size - 1`` along
    every spatial axis, so every block lies wholly inside the map. The seeds
    are ``~keep_mask(key, seed_shape, gamma)``, where ``seed_shape`` is
    ``x.shape`` with each spatial size replaced by ``size - block_size + 1``
    and ``gamma = float32(rate) * float32(gamma / rate)``.

    Blocks overlap, so the expected dropped fraction, ``1 - mean_q (1 -
    gamma)**c(q)`` with ``c(q)`` the number of seed positions whose block
    covers position ``q``, is somewhat below ``rate``: on a 14x14 map with
    ``block_size=7`` it is 0.093 at ``rate=0.1``, 0.173 at 0.2 and 0.358 at 0.5
    (on 56x56: 0.095, 0.179, 0.384). When every spatial size equals
    ``block_size``, ``gamma = rate`` and the fraction is exactly ``rate``.

    While training the kept units are multiplied by one scale for the whole
    call, the number of units over the number kept (as in the paper and
    torchvision), computed in float32 (float64 for float64 input) and rounded
    once with the product:

        y = where(dropped, 0, x * (x.size / kept_count)).

    If nothing is kept the output is all zeros (no NaN). At inference ``y =
    x``. The gradient with respect to ``x`` is the same mask and scale,
    regenerated from the key in the backward pass; the scale is treated as a
    constant (``stop_gradient``), since the count is a step function of the
    rate, so the gradient with respect to a traced rate is 0.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true or a concrete ``rate`` is 0.
      x: the feature maps, of any floating dtype, shaped ``(N, S_1, ..., S_n,
        C)`` (``channel_axis=-1``) or ``(N, C, S_1, ..., S_n)``
        (``channel_axis=1``), with ``n >= 1``.
      rate: the target probability of dropping a unit, in ``[0, 1]``; a Python
        number or a (possibly traced) JAX scalar. Changing a traced rate does
        not recompile; a traced rate outside ``[0, 1]`` (or NaN) makes the
        output all NaN, and ``checkify`` reports it. ``rate == 0`` returns
        ``x``; ``rate == 1`` returns zeros.
      block_size: the width of a block along every spatial axis, at least 1
        and at most the smallest spatial size. ``block_size=1`` is dropout
        with one global scale.
      deterministic: if true, return ``x`` unchanged and draw no random bits.
      channel_axis: the channel axis: ``-1`` for channels-last, ``1`` for
        channels-first (any axis but 0 is accepted).

    Returns:
      An array of the same shape and dtype as ``x``.

    Raises:
      ValueError: if ``x`` has rank below 3, ``channel_axis`` is out of range
        or 0, ``block_size`` is below 1 or larger than a spatial axis, or a
        concrete ``rate`` is outside ``[0, 1]`` or NaN.
      TypeError: if ``x`` is not floating point, ``key`` is not a single key,
        ``rate`` is not a real scalar, ``block_size`` or ``channel_axis`` is not
        an int, or ``deterministic`` is not a bool.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import dropoutx as dx
      >>> x = jnp.ones((2, 12, 12, 3))  # NHWC
      >>> y = dx.drop_block(jax.random.key(0), x, 0.3, block_size=4)
      >>> y.shape, y.dtype
      ((2, 12, 12, 3), dtype('float32'))
      >>> kept = y != 0
      >>> bool(jnp.allclose(y[kept], x.size / kept.sum()))  # one scale for the call
      True
      >>> bool(jnp.isclose(y.sum(), x.sum()))  # so the total is preserved
      True
      >>> bool((dx.drop_block(None, x, 0.3, deterministic=True) == x).all())
      True
    """
    fn_name = "drop_block"
    x = _validate.floating_input(fn_name, x)
    spatial_axes = _validate.feature_map_spatial_axes(fn_name, x, channel_axis)
    spatial_sizes = tuple(x.shape[axis] for axis in spatial_axes)
    block_size = _validate.block_size(fn_name, block_size, x.shape, spatial_sizes)
    rate_value = _validate.rate(fn_name, rate)
    if _validate.static_bool(fn_name, "deterministic", deterministic) or rate_value == 0.0:
        return x
    if rate_value == 1.0:
        return jnp.zeros_like(x)
    key = _validate.key(fn_name, key, required=" when deterministic=False")
    return _drop_block_masked(
        key,
        x,
        _traced_rate(rate, rate_value),
        block_size=block_size,
        spatial_axes=spatial_axes,
        gamma_factor=_seed_probability_factor(spatial_sizes, block_size),
    )


# --- zoneout ----------------------------------------------------------------------


@jax.jit
def _zoneout_masked(
    key: jax.Array, h_prev: jax.Array, h_new: jax.Array, rate: jax.Array
) -> jax.Array:
    """``where(keep_mask, h_new, h_prev)``; the mask is regenerated in the backward pass."""

    def apply(key: jax.Array, h_prev: jax.Array, h_new: jax.Array, rate: jax.Array) -> jax.Array:
        updated = _random.draw_keep_mask(key, h_new.shape, rate, (), jax.typeof(h_new).sharding)
        return jnp.where(updated, h_new, h_prev)

    y = jax.checkpoint(apply)(key, h_prev, h_new, rate)
    return _traced.guard("zoneout", "rate", y, rate, "[0, 1]")


@jax.jit
def _zoneout_expected(h_prev: jax.Array, h_new: jax.Array, rate: jax.Array) -> jax.Array:
    """``rate * h_prev + (1 - rate) * h_new`` in float32 (float64), rounded once."""
    dtype = _dtypes.compute_dtype(h_new.dtype)
    rate_wide = rate.astype(dtype)
    y = rate_wide * h_prev.astype(dtype) + (1 - rate_wide) * h_new.astype(dtype)
    return _traced.guard("zoneout", "rate", y.astype(h_new.dtype), rate, "[0, 1]")


def zoneout(
    key: _validate.KeyLike | None,
    h_prev: ArrayLike,
    h_new: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
) -> jax.Array:
    """Zoneout: each hidden unit keeps its previous value with probability ``rate``.

    Zoneout (Krueger et al. 2017, "Zoneout: regularizing RNNs by randomly
    preserving hidden activations") regularises a recurrent network by letting
    units skip an update instead of zeroing them. While training

        y = where(mask, h_prev, h_new),   mask ~ Bernoulli(rate),

    so here ``rate`` is the probability that a unit "zones out", i.e. KEEPS
    ITS OLD VALUE (it drops the update, in keeping with ``rate`` being a drop
    probability elsewhere). At inference ``y = rate * h_prev + (1 - rate) *
    h_new``, the expectation of the training output, computed in float32
    (float64 for float64 input) and rounded once.

    The units that keep their old value are exactly those that
    :func:`inverted_dropout` would drop for the same key, shape and rate:
    ``mask = ~keep_mask(key, h_new.shape, rate)``. The gradient flows to
    ``h_prev`` where ``mask`` and to ``h_new`` elsewhere (the mask is
    regenerated from the key in the backward pass); at inference it is
    ``rate`` and ``1 - rate``. Apply it once per time step with a fresh key
    (e.g. ``jax.random.fold_in(key, step)`` inside ``jax.lax.scan``).

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true or a concrete ``rate`` is 0.
      h_prev: the previous hidden state, of any floating dtype.
      h_new: the updated hidden state, of the same shape and dtype.
      rate: the probability of keeping the previous value, in ``[0, 1]``; a
        Python number or a (possibly traced) JAX scalar. Changing a traced
        rate does not recompile; a traced rate outside ``[0, 1]`` (or NaN)
        makes the output all NaN, and ``checkify`` reports it. ``rate == 0``
        returns ``h_new``; ``rate == 1`` returns ``h_prev``.
      deterministic: if true, return the expectation ``rate * h_prev + (1 -
        rate) * h_new`` and draw no random bits.

    Returns:
      An array of the shape and dtype of ``h_new``.

    Raises:
      ValueError: if ``h_prev`` and ``h_new`` differ in shape, or a concrete
        ``rate`` is outside ``[0, 1]`` or NaN.
      TypeError: if ``h_prev`` or ``h_new`` is not floating point or they
        differ in dtype, ``key`` is not a single key, ``rate`` is not a real
        scalar, or ``deterministic`` is not a bool.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import dropoutx as dx
      >>> h_prev, h_new = jnp.zeros((4, 8)), jnp.ones((4, 8))
      >>> y = dx.zoneout(jax.random.key(0), h_prev, h_new, 0.25)
      >>> y.shape, y.dtype
      ((4, 8), dtype('float32'))
      >>> sorted(set(y.ravel().tolist()))  # each unit is its old or its new value
      [0.0, 1.0]
      >>> dx.zoneout(None, h_prev, h_new, 0.25, deterministic=True)[0, :3]
      Array([0.75, 0.75, 0.75], dtype=float32)
    """
    fn_name = "zoneout"
    h_prev, h_new = _validate.hidden_states(fn_name, h_prev, h_new)
    rate_value = _validate.rate(fn_name, rate)
    deterministic = _validate.static_bool(fn_name, "deterministic", deterministic)
    if rate_value == 0.0:
        return h_new
    if rate_value == 1.0:
        return h_prev
    if not deterministic:
        key = _validate.key(fn_name, key, required=" when deterministic=False")
    rate = _traced_rate(rate, rate_value)
    if deterministic:
        return _zoneout_expected(h_prev, h_new, rate)
    return _zoneout_masked(key, h_prev, h_new, rate)


# --- LayerDrop ------------------------------------------------------------------------


def _bound_linen_module() -> Any:
    """The Linen module whose method is running, or ``None`` outside Linen.

    Linen keeps a stack of the modules whose methods are running; a
    ``jax.lax.cond`` branch that creates or reads a submodule's variables must
    go through ``flax.linen.cond`` with that module instead. If Linen was never
    imported, no module can be running.
    """
    linen_module = sys.modules.get("flax.linen.module")
    if linen_module is None:
        return None
    stack = getattr(getattr(linen_module, "_context", None), "module_stack", None)
    module = stack[-1] if stack else None
    if module is None or getattr(module, "scope", None) is None:
        return None
    return module


def _check_same_type(fn_name: str, x: Any, y: Any) -> None:
    """Raises unless ``y`` has the tree structure, shapes and dtypes of ``x``."""
    x_types = jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), x)
    y_types = jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), y)
    if (jax.tree.structure(x), x_types) != (jax.tree.structure(y), y_types):
        raise TypeError(
            f"dropoutx.{fn_name}: fn(x) must return an array of the shape and "
            f"dtype of x (a dropped layer returns x itself), got fn(x) of "
            f"{_describe(y)} for x of {_describe(x)}."
        )


def _checked(fn: Callable[[Any], Any], x: Any) -> Any:
    """``fn(x)``, checked to have the structure, shapes and dtypes of ``x``."""
    y = fn(x)
    _check_same_type("layer_drop", x, y)
    return y


def _is_nnx_module(fn: Any) -> bool:
    """Whether ``fn`` is a Flax NNX module (if NNX was never imported, it is not)."""
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(fn, nnx.Module)


def _describe(tree: Any) -> str:
    if isinstance(tree, jax.Array | np.ndarray):
        return f"shape {tree.shape} and dtype {tree.dtype}"
    return f"structure {jax.tree.map(lambda a: f'{jnp.result_type(a)}{list(jnp.shape(a))}', tree)}"


def layer_drop(
    key: _validate.KeyLike | None,
    fn: Callable[[Any], Any],
    x: Any,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
) -> Any:
    """LayerDrop: skip a whole layer with probability ``rate``.

    LayerDrop (Fan, Grave & Joulin 2019, "Reducing transformer depth on demand
    with structured dropout") drops entire layers while training. One decision
    is drawn per call, for the whole batch:

        y = x if drop else fn(x),   drop ~ Bernoulli(rate),

    with ``drop = ~keep_mask(key, (), rate)``. It is built on
    ``jax.lax.cond``, so under ``jax.jit`` a dropped layer is not computed at
    all (under ``jax.vmap`` with one key per example the condition is batched
    and XLA computes both branches, as for any ``cond``). At inference ``y =
    fn(x)``. As in the paper, nothing is rescaled: the network is trained to be
    robust to missing layers, and at inference every layer is kept (or a
    subset is pruned). Use it on a residual block, whose identity is a
    meaningful stand-in.

    ``fn`` may call Flax Linen submodules, e.g. ``dx.layer_drop(
    self.make_rng('dropout'), lambda h: nn.Dense(8)(h), x, rate)`` inside a
    ``nn.compact`` method: a plain ``jax.lax.cond`` would leak the new
    parameters out of its trace, so inside a running Linen module the
    conditional is ``flax.linen.cond`` on that module, and while the module
    is initialising ``fn(x)`` is always computed (so that its parameters are
    created whichever branch is drawn; the output still follows the draw).
    Submodules created inside ``fn`` are named as if called directly. The
    branch that skips ``fn`` must not create or update variables that ``fn``
    does (no ``sow`` or batch statistics written only in ``fn``).

    ``fn`` may also be a Flax NNX module, e.g. a block holding its own
    ``nnx.Dropout`` and RNG streams: the conditional is then ``nnx.cond``
    with the module as an operand, so its state (such as RNG counts, advanced
    only when the block runs) is carried through. Pass the module itself, not
    a function closing over it: a closure hides the module's state from the
    conditional, and NNX raises a ``TraceContextError``.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true or a concrete ``rate`` is 0.
      fn: the layer, a function of ``x`` returning a value of the same tree
        structure, shapes and dtypes (a residual block ``lambda h: h +
        block(h)``).
      x: the layer input: an array, or a pytree of arrays, of any dtype.
      rate: the probability of skipping the layer, in ``[0, 1]``; a Python
        number or a (possibly traced) JAX scalar. Changing a traced rate does
        not recompile; a traced rate outside ``[0, 1]`` (or NaN) makes the
        floating outputs all NaN, and ``checkify`` reports it. ``rate == 0``
        returns ``fn(x)``; ``rate == 1`` returns ``x`` without calling ``fn``.
      deterministic: if true, return ``fn(x)`` and draw no random bits.

    Returns:
      ``x`` or ``fn(x)``.

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1]`` or NaN.
      TypeError: if ``fn`` is not callable, ``fn(x)`` differs from ``x`` in
        structure, shape or dtype (raised while tracing, before the layer
        runs under ``jit``), ``key`` is not a single key, ``rate`` is not a
        real scalar, or ``deterministic`` is not a bool.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import dropoutx as dx
      >>> x = jnp.ones((4, 8))
      >>> layer = lambda h: h + jnp.tanh(h)
      >>> drop = jax.jit(lambda key: dx.layer_drop(key, layer, x, 0.5))  # one compilation
      >>> ys = [drop(jax.random.key(i)) for i in range(100)]
      >>> skipped = sum(bool((y == x).all()) for y in ys)
      >>> 30 < skipped < 70  # about half of the calls skip the layer
      True
      >>> all(bool((y == x).all() or (y == layer(x)).all()) for y in ys)
      True
      >>> dx.layer_drop(None, layer, x, 0.5, deterministic=True).shape
      (4, 8)
    """
    fn_name = "layer_drop"
    _validate.function(fn_name, "fn", fn, "x -> y (the layer)")
    x = jax.tree.map(jnp.asarray, x)
    rate_value = _validate.rate(fn_name, rate)
    deterministic = _validate.static_bool(fn_name, "deterministic", deterministic)

    def layer(h: Any) -> Any:
        return _checked(fn, h)

    if deterministic or rate_value == 0.0:
        return layer(x)
    if rate_value == 1.0:
        return x
    key = _validate.key(fn_name, key, required=" when deterministic=False")
    rate = _traced_rate(rate, rate_value)
    drop = ~_random.draw_keep_mask(key, (), rate, ())
    module = _bound_linen_module()
    if _is_nnx_module(fn):
        from flax import nnx

        y = nnx.cond(drop, lambda _, h: h, lambda layer_fn, h: _checked(layer_fn, h), fn, x)
    elif module is None:
        y = jax.lax.cond(drop, lambda h: h, layer, x)
    elif module.is_initializing():
        y = jax.tree.map(functools.partial(jnp.where, drop), x, layer(x))
    else:
        from flax import linen

        y = linen.cond(drop, lambda _, h: h, lambda _, h: layer(h), module, x)
    return _traced.guard(fn_name, "rate", y, rate, "[0, 1]")
