"""The rest of the family: alpha dropout, drop path, spatial dropout, MC dropout.

Each transform reuses the core machinery: ``_random.keep_mask`` draws every
mask, drop path and spatial dropout are inverted dropout with a broadcast mask
(``_bernoulli._bernoulli_dropout``), and the checks come from ``_validate``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropoutx import _bernoulli, _core, _random, _validate

# SELU's constants (Klambauer et al. 2017), the values of `jax.nn.selu`.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
# SELU's negative saturation, lim selu(x) as x -> -inf: alpha' = -scale * alpha.
SELU_SATURATION = -_SELU_SCALE * _SELU_ALPHA


# --- alpha dropout --------------------------------------------------------------


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
    dtype = _core.compute_dtype(x.dtype)

    def apply(
        key: jax.Array, x: jax.Array, rate: jax.Array, coefficients: tuple[jax.Array, ...]
    ) -> jax.Array:
        kept = _random.keep_mask(key, x.shape, rate, broadcast_dims, jax.typeof(x).sharding)
        scale, offset, dropped = (c.astype(dtype) for c in coefficients)
        return jnp.where(kept, scale * (x.astype(dtype) + offset), dropped).astype(x.dtype)

    y = jax.checkpoint(apply)(key, x, rate, coefficients)
    return _core.guard_traced("alpha_dropout", y, "rate", rate, _core.rate_in_range(rate), "[0, 1]")


def alpha_dropout(
    key: Any,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
    broadcast_dims: Sequence[int] = (),
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
    input) and the result is rounded once. The mask is the one
    :func:`inverted_dropout` draws for the same key, shape, rate and
    ``broadcast_dims``. The gradient with respect to ``x`` is ``a * mask``,
    regenerated from the key in the backward pass (nothing per-element is
    stored). With respect to a traced ``rate`` it is the derivative of ``a`` and
    ``b`` with the mask held fixed; at ``rate == 1``, where ``a`` is infinite,
    it is defined as 0, so no gradient is inf or NaN.

    Args:
      key: a typed key (``jax.random.key``) or a raw ``uint32[2]`` key
        (``jax.random.PRNGKey``). Ignored, and may be ``None``, when
        ``deterministic`` is true.
      x: the activations, of any floating dtype and shape; typically the
        output of ``jax.nn.selu``.
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
    x = _validate.floating_input(fn_name, x)
    rate_value = _validate.rate(fn_name, rate)
    dims = _validate.broadcast_dims(fn_name, broadcast_dims, x.ndim)
    if _validate.deterministic(fn_name, deterministic):
        return x
    key = _random.check_key(fn_name, key)
    if rate_value == 0.0:
        return x
    if rate_value == 1.0:
        return jnp.zeros_like(x)
    dtype = _core.compute_dtype(x.dtype)
    if rate_value is not None:
        rate = jnp.asarray(rate_value, jnp.float32)
        scale, offset, dropped = _alpha_affine(np.float64(rate_value), np)
    else:
        rate = jnp.asarray(rate)
        scale, offset, dropped = _alpha_affine(rate.astype(dtype))
    coefficients = (
        jnp.asarray(scale, dtype),
        jnp.asarray(offset, dtype),
        jnp.asarray(dropped, dtype),
    )
    return _alpha_masked(key, x, rate, coefficients, broadcast_dims=dims)


# --- drop path (stochastic depth) ---------------------------------------------------


def drop_path(
    key: Any,
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
    key in the backward pass.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true.
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
    x = _validate.floating_input(fn_name, x)
    if x.ndim == 0:
        raise ValueError(
            f"dropoutx.{fn_name}: x must have a batch axis (rank >= 1), got a "
            f"scalar of shape {x.shape}; for one example, use x[None]."
        )
    _validate.rate(fn_name, rate)
    rescale = _validate.static_bool(fn_name, "scale_by_keep", scale_by_keep)
    if _validate.deterministic(fn_name, deterministic):
        return x
    every_axis_but_batch = tuple(range(1, x.ndim))
    return _bernoulli._bernoulli_dropout(
        fn_name, key, x, rate, False, every_axis_but_batch, rescale=rescale
    )


# --- spatial (channel) dropout ----------------------------------------------------


def spatial_dropout(
    key: Any,
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

    Flax convolutions are channels-last, the default here. For alpha dropout
    of feature maps, pass the same ``broadcast_dims`` to :func:`alpha_dropout`.

    Args:
      key: a typed or raw PRNG key; ignored (may be ``None``) when
        ``deterministic`` is true.
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
    channel = _validate.axis(fn_name, "channel_axis", channel_axis, x.ndim)
    batch = (
        None if batch_axis is None else _validate.axis(fn_name, "batch_axis", batch_axis, x.ndim)
    )
    if channel == batch:
        raise ValueError(
            f"dropoutx.{fn_name}: channel_axis={channel_axis} and "
            f"batch_axis={batch_axis} name the same axis of an input of rank "
            f"{x.ndim}; for an unbatched input pass batch_axis=None."
        )
    spatial_axes = tuple(axis for axis in range(x.ndim) if axis not in (channel, batch))
    return _bernoulli._bernoulli_dropout(
        fn_name, key, x, rate, deterministic, spatial_axes, rescale=True
    )


# --- Monte-Carlo dropout ------------------------------------------------------------

# Running statistics of a chunk of samples: (count, mean tree, M2 tree), where
# M2 is the sum of squared deviations from the mean.
_Moments = tuple[jax.Array, Any, Any]


def _accumulation_dtype(dtype: jnp.dtype) -> jnp.dtype:
    return _core.compute_dtype(_result_dtype(dtype))


def _result_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """Floating outputs keep their dtype; integer and bool ones average to float."""
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(dtype)
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def _chunk_moments(fn: Callable[[Any], Any], keys: jax.Array) -> _Moments:
    """Mean and M2 (two-pass) of ``fn`` over a chunk of keys, vmapped."""
    samples = jax.vmap(fn)(keys)
    samples = jax.tree.map(lambda s: s.astype(_accumulation_dtype(s.dtype)), samples)
    means = jax.tree.map(lambda s: jnp.mean(s, axis=0), samples)
    m2s = jax.tree.map(lambda s, m: jnp.sum(jnp.square(s - m), axis=0), samples, means)
    return jnp.asarray(keys.shape[0], jnp.int32), means, m2s


def _merge(a: _Moments, b: _Moments) -> _Moments:
    """Chan, Golub & LeVeque's (1979) pairwise update of (count, mean, M2).

    With ``delta = mean_b - mean_a``: ``mean = mean_a + delta * n_b / n`` and
    ``M2 = M2_a + M2_b + delta**2 * n_a * n_b / n``. No sum of squares is
    formed, so there is no cancellation; an empty ``a`` returns ``b`` exactly.
    """
    count_a, means_a, m2s_a = a
    count_b, means_b, m2s_b = b
    count = count_a + count_b

    def mean(mean_a: jax.Array, mean_b: jax.Array) -> jax.Array:
        weight_b = count_b.astype(mean_a.dtype) / count.astype(mean_a.dtype)
        return mean_a + (mean_b - mean_a) * weight_b

    def m2(mean_a: jax.Array, mean_b: jax.Array, m2_a: jax.Array, m2_b: jax.Array) -> jax.Array:
        dtype = mean_a.dtype
        weight = count_a.astype(dtype) * (count_b.astype(dtype) / count.astype(dtype))
        return m2_a + m2_b + jnp.square(mean_b - mean_a) * weight

    return (
        count,
        jax.tree.map(mean, means_a, means_b),
        jax.tree.map(m2, means_a, means_b, m2s_a, m2s_b),
    )


def mc_predict(
    fn: Callable[[jax.Array], Any],
    key: Any,
    num_samples: int,
    *,
    chunk_size: int | None = None,
    ddof: int = 0,
) -> tuple[Any, Any]:
    """Monte-Carlo dropout: the mean and variance of a stochastic forward pass.

    Runs ``fn(k)`` for ``num_samples`` keys ``k`` in ``jax.random.split(key,
    num_samples)`` and returns ``(mean, variance)`` of the outputs, leaf by
    leaf, for any output pytree (Gal & Ghahramani 2016, "Dropout as a Bayesian
    approximation"): ``fn`` is the model with dropout left on (training mode),
    the mean is the predictive mean, and the variance measures the model's
    uncertainty.

    The variance is ``sum((y_k - mean)**2) / (num_samples - ddof)``. The
    default ``ddof=0`` is the plug-in (population) variance of the samples, as
    in ``jnp.var`` and Gal & Ghahramani's predictive variance; pass ``ddof=1``
    for the unbiased estimate of the variance of ``fn``'s output.

    The samples are vmapped over keys. With ``chunk_size``, ``chunk_size``
    samples at a time are computed under ``jax.lax.scan`` and merged into a
    running mean and sum of squared deviations with Chan, Golub & LeVeque's
    pairwise update, so memory is bounded by one chunk of outputs rather than
    ``num_samples`` of them (also under ``jax.grad``: each chunk is
    rematerialised in the backward pass). Within a chunk the statistics are
    two-pass. Accumulation is in float32 (float64 for float64 outputs); the
    results have the dtype of each output leaf (integer and bool leaves give
    floats). Wrap the call in ``jax.jit`` for speed.

    Args:
      fn: a function of one PRNG key returning an array or pytree of arrays,
        e.g. ``lambda k: model.apply(params, x, rngs={"dropout": k})``. It
        receives keys of the same kind (typed or raw) as ``key``.
      key: a typed or raw PRNG key.
      num_samples: the number of forward passes, a positive Python int.
      chunk_size: the number of samples computed at once; ``None`` (default)
        computes all of them in one vmap.
      ddof: delta degrees of freedom of the variance, ``0 <= ddof <
        num_samples``.

    Returns:
      ``(mean, variance)``: two pytrees with the structure, shapes and
      (floating) dtypes of ``fn``'s output.

    Raises:
      TypeError: if ``fn`` is not callable, ``key`` is not a single key,
        ``num_samples``, ``chunk_size`` or ``ddof`` is not an int, or ``fn``
        returns a leaf that is not real (complex, or not an array).
      ValueError: if ``num_samples`` or ``chunk_size`` is less than 1, or
        ``ddof`` is outside ``[0, num_samples)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import dropoutx as dx
      >>> w, x = jnp.full((3, 5), 0.2), jnp.ones(5)
      >>> fn = lambda k: {"y": w @ dx.dropout(k, x, 0.5)}
      >>> mean, variance = dx.mc_predict(fn, jax.random.key(0), 10_000, chunk_size=1000)
      >>> mean["y"].shape, variance["y"].dtype
      ((3,), dtype('float32'))
      >>> # E[y] = w @ x = 1 and Var[y] = 5 * 0.2**2 * 0.5 / 0.5 = 0.2.
      >>> bool(jnp.allclose(mean["y"], 1.0, atol=0.03))
      True
      >>> bool(jnp.allclose(variance["y"], 0.2, atol=0.02))
      True
    """
    fn_name = "mc_predict"
    if not callable(fn):
        raise TypeError(
            f"dropoutx.{fn_name}: fn must be a callable key -> output, e.g. "
            f"lambda k: model.apply(params, x, rngs={{'dropout': k}}), got {fn!r}."
        )
    num_samples = _validate.count(fn_name, "num_samples", num_samples, minimum=1)
    if chunk_size is not None:
        chunk_size = _validate.count(fn_name, "chunk_size", chunk_size, minimum=1)
    ddof = _validate.count(fn_name, "ddof", ddof, minimum=0)
    if ddof >= num_samples:
        raise ValueError(
            f"dropoutx.{fn_name}: ddof must be less than num_samples, got "
            f"{ddof=} with {num_samples=}; the variance divides by num_samples - ddof."
        )
    _random.check_key(fn_name, key)

    shapes = jax.eval_shape(fn, key)
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        dtype = getattr(leaf, "dtype", None)
        real = dtype is not None and (
            jnp.issubdtype(dtype, jnp.floating)
            or jnp.issubdtype(dtype, jnp.integer)
            or jnp.issubdtype(dtype, jnp.bool_)
        )
        if not real:
            raise TypeError(
                f"dropoutx.{fn_name}: fn must return real arrays, but its output "
                f"{jax.tree_util.keystr(path) or 'leaf'} has dtype {dtype}."
            )

    keys = jax.random.split(key, num_samples)
    if chunk_size is None or chunk_size >= num_samples:
        moments = _chunk_moments(fn, keys)
    else:
        num_chunks, remainder = divmod(num_samples, chunk_size)
        full = num_chunks * chunk_size
        chunked_keys = keys[:full].reshape((num_chunks, chunk_size, *keys.shape[1:]))

        def body(moments: _Moments, chunk_keys: jax.Array) -> tuple[_Moments, None]:
            return _merge(moments, _chunk_moments(fn, chunk_keys)), None

        # An empty accumulator (count 0) that the first merge replaces exactly.
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, _accumulation_dtype(s.dtype)), shapes)
        empty = (jnp.asarray(0, jnp.int32), zeros, zeros)
        moments, _ = jax.lax.scan(jax.checkpoint(body, prevent_cse=False), empty, chunked_keys)
        if remainder:
            moments = _merge(moments, _chunk_moments(fn, keys[full:]))

    _, means, m2s = moments
    mean = jax.tree.map(lambda m, s: m.astype(_result_dtype(s.dtype)), means, shapes)
    variance = jax.tree.map(
        lambda m2, s: (m2 / (num_samples - ddof)).astype(_result_dtype(s.dtype)), m2s, shapes
    )
    return mean, variance
