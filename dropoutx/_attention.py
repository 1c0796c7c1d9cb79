"""Dot-product attention whose softmax weights get dropoutx's inverted dropout.

A drop-in ``attention_fn`` for ``flax.linen.MultiHeadDotProductAttention`` and
``flax.nnx.MultiHeadAttention``. Flax's own attention functions draw a
``jax.random.bernoulli`` mask for the attention weights and multiply by a float
``keep / keep_prob`` array, which the backward pass keeps: one stored float per
weight (batch x heads x q_length x kv_length per layer). Here the weights go
through :func:`dropoutx.inverted_dropout` instead, inside a ``jax.checkpoint``
that also covers the product with the values, so the backward pass regenerates
the mask from the key and keeps nothing per weight beyond the softmax output
that attention without dropout keeps too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from dropoutx import _bernoulli, _validate

_FN = "dot_product_attention"
# Flax's options beyond dot_product_attention's positional arguments.
_OPTIONS = (
    "is_causal",
    "force_fp32_for_softmax",
    "promote_dtype",
    "einsum_dot_general",
    "qk_attn_weights_einsum",
    "attn_weights_value_einsum",
)
_KEY_REQUIRED = " as dropout_rng while training (deterministic=False) at a nonzero dropout_rate"
Einsum = Callable[..., jax.Array]


def _promote(
    arrays: tuple[jax.Array, ...], dtype: Any, promote_dtype: Callable[..., Any] | None
) -> tuple[jax.Array, ...]:
    """Casts to ``dtype``, else to the arrays' common dtype, as Flax does."""
    if promote_dtype is not None:
        return tuple(promote_dtype(arrays, dtype=dtype))
    dtype = jnp.result_type(*arrays) if dtype is None else dtype
    return tuple(jnp.asarray(array, dtype) for array in arrays)


def _with_flat_batch(
    fn: Callable[..., jax.Array],
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None,
    mask: jax.Array | None,
) -> jax.Array:
    """Calls ``fn`` with the batch axes of every argument merged into one.

    ``jax.nn.dot_product_attention`` takes at most one batch axis. ``bias`` and
    ``mask`` are broadcast to the batch axes first (lazily, inside the fused
    program), so any shape that broadcasts against the weights works.
    """
    batch = query.shape[:-3]
    if len(batch) <= 1:
        return fn(query, key, value, bias, mask)

    def flat(array: jax.Array | None) -> jax.Array | None:
        """``[batch..., a, b, c]`` (leading axes broadcast) to ``[prod(batch), a, b, c]``."""
        if array is None:
            return None
        rank = len(batch) + 3
        array = jnp.reshape(array, (1,) * (rank - jnp.ndim(array)) + jnp.shape(array))
        array = jnp.broadcast_to(array, batch + array.shape[-3:])
        return array.reshape((math.prod(batch), *array.shape[-3:]))

    out = fn(flat(query), flat(key), flat(value), flat(bias), flat(mask))
    return out.reshape(batch + out.shape[1:])


def _einsums(
    precision: Any,
    einsum_dot_general: Callable[..., Any] | None,
    qk_attn_weights_einsum: Einsum | None,
    attn_weights_value_einsum: Einsum | None,
) -> tuple[Einsum, Einsum]:
    """The two einsums, as Flax chooses them (AQT passes its own pair)."""
    if qk_attn_weights_einsum is not None and attn_weights_value_einsum is not None:
        return qk_attn_weights_einsum, attn_weights_value_einsum
    einsum = functools.partial(
        jnp.einsum, precision=precision, _dot_general=einsum_dot_general or jax.lax.dot_general
    )
    return einsum, einsum


def _attention_weights(
    query: jax.Array,
    key: jax.Array,
    bias: jax.Array | None,
    mask: jax.Array | None,
    is_causal: bool,
    force_fp32_for_softmax: bool,
    einsum: Einsum,
) -> jax.Array:
    """``softmax(query @ key / sqrt(depth) + bias)`` with masked logits at the dtype's minimum.

    Shape ``[batch..., heads, q_length, kv_length]``, in the inputs' dtype (or
    float32 with ``force_fp32_for_softmax``), as Flax's
    ``dot_product_attention_weights`` computes it. Grouped-query heads are
    contracted group by group, without repeating ``key``.
    """
    dtype = query.dtype
    heads, kv_heads, depth = query.shape[-2], key.shape[-2], query.shape[-1]
    query = query / jnp.sqrt(depth).astype(dtype)
    if heads == kv_heads:
        logits = einsum("...qhd,...khd->...hqk", query, key)
    else:
        grouped = query.reshape((*query.shape[:-2], kv_heads, heads // kv_heads, depth))
        logits = einsum("...qhgd,...khd->...hgqk", grouped, key)
        logits = logits.reshape((*logits.shape[:-4], heads, *logits.shape[-2:]))
    if bias is not None:
        logits = logits + bias
    if is_causal:
        causal = jnp.tril(jnp.ones(logits.shape[-2:], bool))
        mask = causal if mask is None else jnp.logical_and(mask, causal)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(dtype).min)
    if force_fp32_for_softmax and dtype != jnp.float32:
        return jax.nn.softmax(logits.astype(jnp.float32))
    return jax.nn.softmax(logits).astype(dtype)


def _weighted_values(weights: jax.Array, value: jax.Array, einsum: Einsum) -> jax.Array:
    """``weights @ value`` per head, ``[batch..., q_length, heads, depth]``."""
    heads, kv_heads = weights.shape[-3], value.shape[-2]
    if heads == kv_heads:
        return einsum("...hqk,...khd->...qhd", weights, value)
    grouped = weights.reshape(
        (*weights.shape[:-3], kv_heads, heads // kv_heads, *weights.shape[-2:])
    )
    out = einsum("...hgqk,...khd->...qhgd", grouped, value)
    return out.reshape((*out.shape[:-3], heads, out.shape[-1]))


def _dropped_weighted_values(
    dropout_rng: jax.Array,
    weights: jax.Array,
    value: jax.Array,
    rate: Any,
    *,
    broadcast_dims: tuple[int, ...],
    einsum: Einsum,
) -> jax.Array:
    """``dropout(weights) @ value``, keeping only the key and scalars for the backward pass.

    Under ``jax.checkpoint`` the dropped weights are not saved for the
    product's gradient with respect to ``value``; they are recomputed from
    ``weights`` (which the softmax's own gradient keeps anyway) and the key.
    A Python ``rate`` stays a Python number (closed over), so the scale is
    ``1 / (1 - rate)`` taken in Python, as :func:`dropoutx.inverted_dropout`
    does; a JAX rate is an argument, so it may be traced and differentiated.
    """

    def apply(dropout_rng: jax.Array, weights: jax.Array, value: jax.Array, rate: Any) -> jax.Array:
        dropped = _bernoulli.inverted_dropout(
            dropout_rng, weights, rate, broadcast_dims=broadcast_dims
        )
        return _weighted_values(dropped, value, einsum)

    if isinstance(rate, jax.Array):
        return jax.checkpoint(apply)(dropout_rng, weights, value, rate)
    return jax.checkpoint(lambda k, w, v: apply(k, w, v, rate))(dropout_rng, weights, value)


def _sow(module: Any, weights: jax.Array) -> None:
    """Sows the attention weights as Flax's attention functions do."""
    if isinstance(module, nn.Module):
        module.sow("intermediates", "attention_weights", weights)
    elif isinstance(module, nnx.Module):
        module.sow(nnx.Intermediate, "attention_weights", weights)
    else:
        raise TypeError(
            f"dropoutx.{_FN}: module must be a flax.linen.Module or a flax.nnx.Module "
            f"that sows the attention weights, or None, got {type(module).__name__}."
        )


def dot_product_attention(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    bias: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: _validate.KeyLike | None = None,
    dropout_rate: ArrayLike = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    *,
    is_causal: bool = False,
    force_fp32_for_softmax: bool = False,
    promote_dtype: Callable[..., Any] | None = None,
    einsum_dot_general: Callable[..., Any] | None = None,
    qk_attn_weights_einsum: Einsum | None = None,
    attn_weights_value_einsum: Einsum | None = None,
    **flax_options: Any,
) -> jax.Array:
    """Dot-product attention with inverted dropout on the softmax weights.

    A drop-in ``attention_fn`` for Flax's attention modules::

        flax.linen.MultiHeadDotProductAttention(..., attention_fn=dx.dot_product_attention)
        flax.nnx.MultiHeadAttention(..., attention_fn=dx.dot_product_attention, rngs=rngs)

    It takes the arguments of ``flax.linen.dot_product_attention`` and
    ``flax.nnx.dot_product_attention`` (same names, order and defaults) and
    every option either module passes, so nothing else changes: the same
    parameters, and the same result at inference. As in Flax, ``key`` is the
    attention key tensor and ``dropout_rng`` the PRNG key.

    The output is ``softmax(query @ key^T / sqrt(depth) + bias) @ value`` per
    head, with logits where ``mask`` is false (or above the diagonal, with
    ``is_causal``) set to the dtype's minimum. While training at a nonzero
    rate, the weights pass through :func:`dropoutx.inverted_dropout` before the
    product with ``value``:

    - one mask of shape ``[q_length, kv_length]`` shared by every batch axis and
      head when ``broadcast_dropout`` (Flax's default), else one per weight;
    - kept weights are scaled by ``1 / (1 - dropout_rate)`` computed in
      float32 and rounded once (Flax rounds ``1 / keep`` in the weights' dtype,
      which biases bfloat16);
    - nothing per weight is stored for the backward pass: the dropout and the
      product with ``value`` run under ``jax.checkpoint``, so the mask is
      regenerated from ``dropout_rng``; Flax keeps a float multiplier per
      weight;
    - ``dropout_rate`` may be a traced JAX scalar (no recompilation); rate 1
      gives zeros and finite gradients.

    At inference (``deterministic=True``) or at a concrete rate of 0, with no
    ``module`` to sow into and no custom precision or einsum, it calls
    ``jax.nn.dot_product_attention``, the fast path that
    ``flax.nnx.dot_product_attention`` takes; its result equals Flax's
    explicit computation up to float rounding (the softmax runs in float32).

    Sharded inputs need no communication: the mask is generated where each
    shard of the weights lives, and the values equal the unsharded call's.

    Args:
      query: ``[batch..., q_length, heads, depth]``, floating point.
      key: ``[batch..., kv_length, kv_heads, depth]``; ``heads`` must be a
        multiple of ``kv_heads`` (grouped-query attention when larger).
      value: ``[batch..., kv_length, kv_heads, v_depth]``.
      bias: added to the logits; broadcastable to ``[batch..., heads,
        q_length, kv_length]``.
      mask: logits where it is false are masked out; broadcastable as ``bias``.
      broadcast_dropout: if true, one dropout mask shared by the batch and
        head axes.
      dropout_rng: the PRNG key for dropout, a typed or raw key; needed only
        while training at a nonzero rate.
      dropout_rate: the probability of dropping each attention weight, in
        ``[0, 1]``; a Python number or a (possibly traced) JAX scalar.
      deterministic: if true, no dropout.
      dtype: the dtype of the computation (default: the inputs' common dtype).
      precision: the precision of both einsums, see ``jax.lax.Precision``.
      module: a Linen or NNX module that sows the (pre-dropout) weights into
        its ``'intermediates'`` collection (Linen) or ``nnx.Intermediate``
        state (NNX), as Flax does; ``None`` sows nothing.
      is_causal: mask out the weights above the diagonal (NNX's option).
      force_fp32_for_softmax: compute the softmax in float32 and keep the
        weights in float32 (Linen's option).
      promote_dtype: NNX's dtype promotion function, called as
        ``promote_dtype((query, key, value), dtype=dtype)``.
      einsum_dot_general: the ``dot_general`` of both einsums (Linen's option).
      qk_attn_weights_einsum: the einsum for the logits (Linen's option, e.g.
        for AQT); given together with ``attn_weights_value_einsum``.
      attn_weights_value_einsum: the einsum for the product with ``value``.
      **flax_options: none other is accepted; an unknown name raises
        ``TypeError`` rather than being ignored.

    Returns:
      ``[batch..., q_length, heads, v_depth]``, in the computation dtype.

    Raises:
      ValueError: if the shapes do not fit together, a concrete
        ``dropout_rate`` is outside ``[0, 1]``, or precision and custom einsums
        are combined.
      TypeError: if an input is not floating point, ``dropout_rng`` is not a
        single key while training, a flag is not a bool, or an unknown option
        is passed.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import dropoutx as dx
      >>> q = k = v = jnp.ones((2, 5, 4, 8))  # [batch, length, heads, depth]
      >>> out = dx.dot_product_attention(
      ...     q, k, v, dropout_rng=jax.random.key(0), dropout_rate=0.5)
      >>> out.shape, out.dtype
      ((2, 5, 4, 8), dtype('float32'))
      >>> eval_out = dx.dot_product_attention(q, k, v, dropout_rate=0.5, deterministic=True)
      >>> bool(jnp.allclose(eval_out, 1.0))  # uniform weights over ones
      True
    """
    _validate.no_other_options(_FN, flax_options, _OPTIONS)
    query, key, value = _validate.attention_inputs(_FN, query, key, value)
    rate_value = _validate.rate(_FN, dropout_rate)
    broadcast = _validate.static_bool(_FN, "broadcast_dropout", broadcast_dropout)
    deterministic = _validate.static_bool(_FN, "deterministic", deterministic)
    is_causal = _validate.static_bool(_FN, "is_causal", is_causal)
    force_fp32 = _validate.static_bool(_FN, "force_fp32_for_softmax", force_fp32_for_softmax)
    _validate.attention_einsums(
        _FN, precision, einsum_dot_general, qk_attn_weights_einsum, attn_weights_value_einsum
    )
    einsum_qk, einsum_wv = _einsums(
        precision, einsum_dot_general, qk_attn_weights_einsum, attn_weights_value_einsum
    )
    no_dropout = deterministic or rate_value == 0.0
    key_array = None if no_dropout else _validate.key(_FN, dropout_rng, required=_KEY_REQUIRED)
    query, key, value = _promote((query, key, value), dtype, promote_dtype)
    bias = None if bias is None else jnp.asarray(bias)
    mask = None if mask is None else jnp.asarray(mask)

    custom_einsum = (
        precision is not None
        or einsum_dot_general is not None
        or qk_attn_weights_einsum is not None
    )
    if no_dropout and module is None and not custom_einsum:
        fast = functools.partial(jax.nn.dot_product_attention, is_causal=is_causal)
        mask = None if mask is None else mask.astype(bool)
        return _with_flat_batch(fast, query, key, value, bias, mask)

    weights = _attention_weights(query, key, bias, mask, is_causal, force_fp32, einsum_qk)
    if module is not None:
        _sow(module, weights)
    if key_array is None:
        return _weighted_values(weights, value, einsum_wv)
    batch_and_heads = tuple(range(weights.ndim - 2)) if broadcast else ()
    rate = rate_value if rate_value is not None else jnp.asarray(dropout_rate)
    return _dropped_weighted_values(
        key_array, weights, value, rate, broadcast_dims=batch_and_heads, einsum=einsum_wv
    )
