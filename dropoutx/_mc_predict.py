"""Monte-Carlo dropout: the mean and variance of a stochastic forward pass.

Not a transform: it runs a function of a key (a model with its dropout on)
over many keys and reduces the outputs to their mean and variance, in chunks
of bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dropoutx import _dtypes, _validate
from dropoutx._validate import KeyLike

# Running statistics of a chunk of samples: (count, mean tree, M2 tree), where
# M2 is the sum of squared deviations from the mean.
_Moments = tuple[jax.Array, Any, Any]


def _accumulation_dtype(dtype: jnp.dtype) -> jnp.dtype:
    return _dtypes.compute_dtype(_result_dtype(dtype))


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
    key: KeyLike,
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
    fn = _validate.function(
        fn_name,
        "fn",
        fn,
        "key -> output, e.g. lambda k: model.apply(params, x, rngs={'dropout': k})",
    )
    num_samples = _validate.count(fn_name, "num_samples", num_samples, minimum=1)
    if chunk_size is not None:
        chunk_size = _validate.count(fn_name, "chunk_size", chunk_size, minimum=1)
    ddof = _validate.ddof(fn_name, ddof, num_samples)
    _validate.key(fn_name, key)
    shapes = jax.eval_shape(fn, key)
    _validate.real_outputs(fn_name, shapes)

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
