"""Tests for ``dx.dot_product_attention``, the attention-weights dropout.

What they prove: as ``attention_fn`` it is a drop-in for Flax's attention
modules (Linen and NNX: the same parameters, the same inference outputs, under
``jax.jit``, ``nnx.jit`` and ``nn.scan`` over layers); while training, the
output is exactly ``where(mask, weights / (1 - rate), 0) @ value`` with the
mask of ``dx.keep_mask`` (shared by the batch and head axes with
``broadcast_dropout``), the scale rounded once (exact in bfloat16, where
Flax's is not); the keep fraction is right; a traced rate does not recompile;
rate 1 gives zeros and finite gradients; gradients match finite differences;
``mask``, ``bias``, ``is_causal``, grouped-query heads and sowing work; the
backward pass of a scanned stack stores no mask; bad input raises clear errors.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import dropoutx as dx

RATE = 0.25
B, L, H, D = 2, 24, 3, 8


def qkv(seed: int = 0, shape: tuple[int, ...] = (B, L, H, D), dtype: Any = jnp.float32) -> Any:
    keys = jax.random.split(jax.random.key(seed), 3)
    return tuple(jax.random.normal(k, shape, dtype) for k in keys)


def identity_values(batch: tuple[int, ...], length: int, heads: int) -> jax.Array:
    """``value[..., k, h, :] = e_k``: the output then equals the (dropped) weights.

    ``out[..., q, h, k] = sum_j w[..., h, q, j] * e_j[k] = w[..., h, q, k]``.
    """
    eye = jnp.eye(length)[:, None, :]
    return jnp.broadcast_to(eye, (*batch, length, heads, length))


def dropped_weights(
    query: jax.Array, key: jax.Array, rng: Any, rate: Any, **kwargs: Any
) -> jax.Array:
    """The dropped attention weights, ``[batch..., heads, q, k]``, read off the output."""
    value = identity_values(query.shape[:-3], key.shape[-3], key.shape[-2]).astype(query.dtype)
    out = dx.dot_product_attention(query, key, value, dropout_rng=rng, dropout_rate=rate, **kwargs)
    return jnp.moveaxis(out, -2, -3)


# --- exact values while training ------------------------------------------------------


@pytest.mark.parametrize("broadcast", [True, False])
def test_training_output_is_masked_weights_times_values(broadcast: bool) -> None:
    """``out == where(keep_mask, w / (1 - rate), 0) @ v``, bit for bit."""
    q, k, v = qkv()
    rng = jax.random.key(7)
    out = dx.dot_product_attention(
        q, k, v, dropout_rng=rng, dropout_rate=RATE, broadcast_dropout=broadcast
    )
    weights = nn.dot_product_attention_weights(q, k)
    dims = (0, 1) if broadcast else ()
    kept = dx.keep_mask(rng, weights.shape, RATE, broadcast_dims=dims)
    expected = jnp.einsum("...hqk,...khd->...qhd", jnp.where(kept, weights / (1 - RATE), 0), v)
    np.testing.assert_array_equal(out, expected)


def test_broadcast_mask_is_shared_by_batch_and_heads() -> None:
    q, k, _ = qkv()
    dropped = dropped_weights(q, k, jax.random.key(1), RATE)
    kept = np.asarray(dropped != 0)
    assert (kept == kept[:1, :1]).all()
    assert 0 < kept.mean() < 1


def test_unbroadcast_masks_differ_across_batch_and_heads() -> None:
    q, k, _ = qkv()
    dropped = dropped_weights(q, k, jax.random.key(1), RATE, broadcast_dropout=False)
    kept = np.asarray(dropped != 0).reshape(B * H, L * L)
    # Two independent masks of 576 cells agree everywhere with probability
    # (rate**2 + keep**2)**576 < 1e-100.
    assert all((kept[i] != kept[0]).any() for i in range(1, B * H))


@pytest.mark.parametrize("broadcast", [True, False])
def test_keep_fraction(broadcast: bool) -> None:
    """The fraction of kept weights is within 5 sigma of ``1 - rate``.

    Cells are independent Bernoulli(1 - rate); a correct implementation falls
    outside 5 binomial standard deviations with probability < 6e-7.
    """
    q, k, _ = qkv(shape=(4, 128, 4, 8))
    dropped = dropped_weights(q, k, jax.random.key(3), RATE, broadcast_dropout=broadcast)
    kept = np.asarray(dropped != 0)
    cells = kept[0, 0] if broadcast else kept
    n = cells.size
    sigma = math.sqrt(RATE * (1 - RATE) / n)
    assert abs(cells.mean() - (1 - RATE)) < 5 * sigma


def test_kept_weights_are_unbiased() -> None:
    """``E[dropped] = w``: over 400 keys the mean is within 5 standard errors of ``w``.

    Each cell's mean over n keys has standard error ``w * sqrt(rate / keep /
    n)``; the check on the total over cells fails a correct implementation with
    probability < 6e-7.
    """
    q, k, _ = qkv(shape=(1, 16, 1, 8))
    weights = nn.dot_product_attention_weights(q, k)
    keys = jax.random.split(jax.random.key(11), 400)
    samples = jax.vmap(lambda r: dropped_weights(q, k, r, RATE, broadcast_dropout=False))(keys)
    total = float(samples.sum(axis=(1, 2, 3, 4)).mean())
    # Var of the sum over cells of one sample: sum w**2 * rate / keep.
    standard_error = math.sqrt(float((weights**2).sum()) * RATE / (1 - RATE) / len(keys))
    assert abs(total - float(weights.sum())) < 5 * standard_error


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_scale_is_rounded_once_in_low_precision(dtype: Any) -> None:
    """Kept weights equal ``(w.astype(float32) / (1 - rate)).astype(dtype)`` exactly."""
    q, k, _ = qkv(dtype=dtype)
    rate = 0.1
    dropped = dropped_weights(q, k, jax.random.key(5), rate)
    weights = nn.dot_product_attention_weights(q, k)
    assert dropped.dtype == weights.dtype == dtype
    expected = (weights.astype(jnp.float32) / (1 - rate)).astype(dtype)
    kept = dropped != 0
    np.testing.assert_array_equal(np.asarray(dropped)[kept], np.asarray(expected)[kept])
    # Flax multiplies by 1 / 0.9 rounded to bfloat16 (1.109375, 0.16% low), so
    # its kept weights differ; this is the bias dropoutx avoids.
    if dtype == jnp.bfloat16:
        flax_scale = jnp.asarray(1.0, dtype) / jnp.asarray(1 - rate, dtype)
        assert float(flax_scale) != pytest.approx(1 / (1 - rate), rel=1e-3)


# --- traced rates, rate 0 and 1, gradients ---------------------------------------------


def test_traced_rate_does_not_recompile_and_matches_python_rate() -> None:
    q, k, v = qkv()
    rng = jax.random.key(2)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def attend(rate: jax.Array) -> jax.Array:
        return dx.dot_product_attention(q, k, v, dropout_rng=rng, dropout_rate=rate)

    for rate in (0.1, 0.5, 0.9):
        traced = attend(jnp.float32(rate))
        python = dx.dot_product_attention(q, k, v, dropout_rng=rng, dropout_rate=rate)
        # The same mask; the scale 1 / (1 - rate) may differ by one float32
        # rounding between a traced rate and a Python one.
        np.testing.assert_allclose(traced, python, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rate", [1.0, jnp.float32(1.0)], ids=["python", "traced"])
def test_rate_one_gives_zeros_and_finite_gradients(rate: Any) -> None:
    q, k, v = qkv()
    rng = jax.random.key(0)

    def loss(q: jax.Array, k: jax.Array, v: jax.Array, rate: Any) -> jax.Array:
        return dx.dot_product_attention(q, k, v, dropout_rng=rng, dropout_rate=rate).sum()

    out = jax.jit(lambda r: dx.dot_product_attention(q, k, v, dropout_rng=rng, dropout_rate=r))(
        rate
    )
    assert (out == 0).all()
    argnums = (0, 1, 2, 3) if isinstance(rate, jax.Array) else (0, 1, 2)
    grads = jax.grad(loss, argnums=argnums)(q, k, v, rate)
    for grad in grads:
        assert jnp.isfinite(grad).all()


def test_rate_zero_needs_no_key_and_equals_inference() -> None:
    q, k, v = qkv()
    train = dx.dot_product_attention(q, k, v, dropout_rate=0.0)
    infer = dx.dot_product_attention(q, k, v, dropout_rate=0.5, deterministic=True)
    np.testing.assert_array_equal(train, infer)


def test_gradients_match_finite_differences() -> None:
    """Reverse and forward mode, with the mask held fixed by the key, in float64."""
    with jax.enable_x64(True):
        q, k, v = (a.astype(jnp.float64) for a in qkv(shape=(2, 6, 2, 4)))
        rng = jax.random.key(4)

        def attend(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
            return dx.dot_product_attention(q, k, v, dropout_rng=rng, dropout_rate=0.3)

        check_grads(attend, (q, k, v), order=1, modes=["rev", "fwd"])


def test_gradient_with_respect_to_value_is_dropped_weights() -> None:
    """``d out / d v = dropped^T``: the backward pass uses the forward pass's mask."""
    q, k, v = qkv()
    rng = jax.random.key(9)
    cotangent = jax.random.normal(jax.random.key(1), v.shape)

    def attend(v: jax.Array) -> jax.Array:
        return dx.dot_product_attention(q, k, v, dropout_rng=rng, dropout_rate=RATE)

    _, vjp = jax.vjp(attend, v)
    (grad_v,) = vjp(cotangent)
    weights = nn.dot_product_attention_weights(q, k)
    kept = dx.keep_mask(rng, weights.shape, RATE, broadcast_dims=(0, 1))
    dropped = jnp.where(kept, weights / (1 - RATE), 0)
    expected = jnp.einsum("...hqk,...qhd->...khd", dropped, cotangent)
    np.testing.assert_allclose(grad_v, expected, rtol=1e-5, atol=1e-6)


def test_same_key_same_result_eager_and_jit() -> None:
    q, k, v = qkv()
    rng = jax.random.key(12)

    def attend(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        return dx.dot_product_attention(q, k, v, dropout_rng=rng, dropout_rate=RATE)

    np.testing.assert_array_equal(attend(q, k, v), jax.jit(attend)(q, k, v))


def test_vmap_over_keys_equals_a_loop() -> None:
    """The same dropped weights for each key, mapped or looped (read off exactly)."""
    q, k, _ = qkv()
    keys = jax.random.split(jax.random.key(0), 3)

    def attend(rng: jax.Array) -> jax.Array:
        return dropped_weights(q, k, rng, RATE)

    np.testing.assert_array_equal(jax.vmap(attend)(keys), jnp.stack([attend(r) for r in keys]))


# --- masks, bias, causal, grouped-query heads, batch axes, sowing ---------------------


def test_inference_equals_flax_with_mask_bias_and_batch_axes() -> None:
    q, k, v = qkv(shape=(2, 3, L, H, D))
    mask = jax.random.bernoulli(jax.random.key(1), 0.7, (2, 1, 1, L, L))
    bias = jax.random.normal(jax.random.key(2), (1, 3, H, L, L))
    for kwargs in ({}, {"mask": mask}, {"bias": bias}, {"mask": mask, "bias": bias}):
        ours = dx.dot_product_attention(q, k, v, deterministic=True, **kwargs)
        np.testing.assert_allclose(
            ours, nn.dot_product_attention(q, k, v, **kwargs), rtol=1e-5, atol=1e-6
        )


def test_masked_and_causal_weights_are_zero_while_training() -> None:
    q, k, _ = qkv()
    dropped = dropped_weights(q, k, jax.random.key(0), RATE, is_causal=True)
    above_diagonal = np.triu(np.ones((L, L), bool), 1)
    assert (np.asarray(dropped)[..., above_diagonal] == 0).all()
    mask = jnp.asarray(np.random.default_rng(0).random((1, 1, L, L)) < 0.5)
    dropped = dropped_weights(q, k, jax.random.key(0), RATE, mask=mask)
    assert (np.asarray(dropped)[..., ~np.asarray(mask[0, 0])] == 0).all()


def test_causal_inference_equals_flax_nnx() -> None:
    q, k, v = qkv()
    ours = dx.dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_allclose(
        ours, nnx.dot_product_attention(q, k, v, is_causal=True), rtol=1e-5, atol=1e-6
    )


def test_grouped_query_heads() -> None:
    """Grouped-query attention equals attention with the key/value heads repeated."""
    q, _, _ = qkv(shape=(B, L, 4, D))
    _, k, v = qkv(seed=1, shape=(B, L, 2, D))
    rng = jax.random.key(8)
    repeated = (jnp.repeat(k, 2, axis=-2), jnp.repeat(v, 2, axis=-2))
    for kwargs in ({"deterministic": True}, {"dropout_rng": rng, "dropout_rate": RATE}):
        np.testing.assert_allclose(
            dx.dot_product_attention(q, k, v, **kwargs),
            dx.dot_product_attention(q, *repeated, **kwargs),
            rtol=1e-5,
            atol=1e-6,
        )
    np.testing.assert_allclose(
        dx.dot_product_attention(q, k, v), nnx.dot_product_attention(q, k, v), atol=1e-6
    )


def test_force_fp32_for_softmax_keeps_float32_weights() -> None:
    """Linen's option: the softmax and the weights in float32, as Flax computes them."""
    q, k, v = qkv(dtype=jnp.bfloat16)
    kwargs = {"force_fp32_for_softmax": True, "precision": jax.lax.Precision.DEFAULT}
    ours = dx.dot_product_attention(q, k, v, deterministic=True, **kwargs)
    theirs = nn.dot_product_attention(q, k, v, **kwargs)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


def test_module_sows_pre_dropout_weights_linen() -> None:
    class Attend(nn.Module):
        @nn.compact
        def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
            return dx.dot_product_attention(
                q, k, v, dropout_rng=jax.random.key(0), dropout_rate=RATE, module=self
            )

    q, k, v = qkv()
    _, state = Attend().apply({}, q, k, v, mutable=["intermediates"])
    (sown,) = state["intermediates"]["attention_weights"]
    np.testing.assert_array_equal(sown, nn.dot_product_attention_weights(q, k))


def test_module_sows_pre_dropout_weights_nnx() -> None:
    layer = nnx.MultiHeadAttention(
        H,
        H * D,
        dropout_rate=RATE,
        deterministic=False,
        decode=False,
        attention_fn=dx.dot_product_attention,
        rngs=nnx.Rngs(0),
    )
    x = qkv()[0].reshape(B, L, H * D)
    forward = nnx.capture(lambda layer, x: layer(x, sow_weights=True), nnx.Intermediate)
    _, intermediates = forward(layer, x)
    (sown,) = intermediates["attention_weights"].get_value()
    assert sown.shape == (B, H, L, L)
    np.testing.assert_allclose(sown.sum(-1), 1, rtol=1e-5)


# --- drop-in for Flax's modules ----------------------------------------------------------


def linen_attention(attention_fn: Any, **fields: Any) -> nn.Module:
    return nn.MultiHeadDotProductAttention(
        num_heads=H, qkv_features=H * D, dropout_rate=RATE, attention_fn=attention_fn, **fields
    )


def test_linen_drop_in_same_params_and_inference_under_jit() -> None:
    x = qkv()[0].reshape(B, L, H * D)
    ours, theirs = (
        linen_attention(dx.dot_product_attention),
        linen_attention(nn.dot_product_attention),
    )
    params = ours.init(jax.random.key(0), x, deterministic=True)
    chex.assert_trees_all_equal(params, theirs.init(jax.random.key(0), x, deterministic=True))
    apply = functools.partial(jax.jit, static_argnames="deterministic")
    np.testing.assert_allclose(
        apply(ours.apply)(params, x, deterministic=True),
        apply(theirs.apply)(params, x, deterministic=True),
        rtol=1e-5,
        atol=1e-6,
    )


def reference_attention_fn(
    query: Any,
    key: Any,
    value: Any,
    dropout_rng: Any,
    dropout_rate: float,
    deterministic: bool,
    **_: Any,
) -> jax.Array:
    """What ``dx.dot_product_attention`` must compute while training, written out."""
    weights = nn.dot_product_attention_weights(query, key)
    if deterministic:
        return jnp.einsum("...hqk,...khd->...qhd", weights, value)
    kept = dx.keep_mask(
        dropout_rng, weights.shape, dropout_rate, broadcast_dims=range(weights.ndim - 2)
    )
    dropped = jnp.where(kept, weights / (1 - dropout_rate), 0)
    return jnp.einsum("...hqk,...khd->...qhd", dropped, value)


def test_linen_module_training_uses_the_make_rng_key() -> None:
    x = qkv()[0].reshape(B, L, H * D)
    ours = linen_attention(dx.dot_product_attention, deterministic=False)
    reference = linen_attention(reference_attention_fn, deterministic=False)
    params = ours.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    rngs = {"dropout": jax.random.key(5)}
    np.testing.assert_allclose(
        jax.jit(ours.apply)(params, x, rngs=rngs),
        reference.apply(params, x, rngs=rngs),
        rtol=1e-5,
        atol=1e-6,
    )


def test_nnx_drop_in_same_params_inference_and_training_under_nnx_jit() -> None:
    def make(attention_fn: Any) -> nnx.MultiHeadAttention:
        return nnx.MultiHeadAttention(
            H, H * D, dropout_rate=RATE, decode=False, attention_fn=attention_fn, rngs=nnx.Rngs(0)
        )

    ours, theirs = make(dx.dot_product_attention), make(nnx.dot_product_attention)
    chex.assert_trees_all_equal(nnx.state(ours), nnx.state(theirs))
    x = qkv()[0].reshape(B, L, H * D)
    call = nnx.jit(lambda layer, x: layer(x))
    ours.eval()
    theirs.eval()
    np.testing.assert_allclose(call(ours, x), call(theirs, x), rtol=1e-5, atol=1e-6)
    ours.train()
    reference = make(reference_attention_fn)
    reference.train()
    np.testing.assert_allclose(call(ours, x), reference(x), rtol=1e-5, atol=1e-6)


class ScannedBlock(nn.Module):
    """A residual attention block, for ``nn.scan`` over layers."""

    attention_fn: Any

    @nn.compact
    def __call__(self, x: jax.Array, _: Any) -> tuple[jax.Array, None]:
        h = nn.MultiHeadDotProductAttention(
            num_heads=H, dropout_rate=RATE, attention_fn=self.attention_fn
        )(nn.LayerNorm()(x), deterministic=not self.is_mutable_collection("train"))
        return x + h, None


def scanned_stack(attention_fn: Any, layers: int = 3) -> nn.Module:
    return nn.scan(
        ScannedBlock,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        length=layers,
    )(attention_fn)


def test_linen_drop_in_under_scan_over_layers() -> None:
    x = qkv()[0].reshape(B, L, H * D)
    ours, theirs = scanned_stack(dx.dot_product_attention), scanned_stack(nn.dot_product_attention)
    params = ours.init(jax.random.key(0), x, None)
    chex.assert_trees_all_equal(params, theirs.init(jax.random.key(0), x, None))
    # Inference: the 'train' collection is absent, so deterministic=True.
    np.testing.assert_allclose(
        jax.jit(ours.apply)(params, x, None)[0],
        jax.jit(theirs.apply)(params, x, None)[0],
        rtol=1e-5,
        atol=1e-5,
    )
    # Training: one key per layer, and exactly the written-out reference.
    rngs = {"dropout": jax.random.key(1)}
    train = {**params, "train": {}}
    reference = scanned_stack(reference_attention_fn)
    np.testing.assert_allclose(
        jax.jit(lambda p: ours.apply(p, x, None, rngs=rngs, mutable="train")[0][0])(train),
        reference.apply(train, x, None, rngs=rngs, mutable="train")[0][0],
        rtol=1e-5,
        atol=1e-5,
    )


# --- memory -------------------------------------------------------------------------


def scan_gradient_temp_bytes(attend: Any, layers: int) -> int:
    """Compiled temp memory of the gradient of a scanned stack of attention layers."""
    x = jnp.ones((4, 128, 4, 16))

    def loss(x: jax.Array, key: jax.Array) -> jax.Array:
        def body(h: jax.Array, key: jax.Array) -> tuple[jax.Array, None]:
            return h + attend(h, key), None

        h, _ = jax.lax.scan(body, x, jax.random.split(key, layers))
        return (h**2).sum()

    compiled = jax.jit(jax.grad(loss)).lower(x, jax.random.key(0)).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def test_backward_pass_of_scanned_attention_stores_no_mask() -> None:
    """Dropout adds nothing per layer to the gradient's memory, and less than one layer's weights.

    The memory that grows with depth is what the backward pass stores per
    layer. From 4 to 8 layers, dropoutx's growth equals the no-dropout
    model's, with or without ``broadcast_dropout``; Flax's unbroadcast
    dropout adds a float per weight per layer. Beyond that, XLA's schedule
    may keep one more temporary of the size of a layer's weights alive.
    """

    def ours(h: jax.Array, key: jax.Array, **kwargs: Any) -> jax.Array:
        return dx.dot_product_attention(h, h, h, dropout_rng=key, dropout_rate=0.1, **kwargs)

    def none(h: jax.Array, key: jax.Array) -> jax.Array:
        return dx.dot_product_attention(h, h, h)

    def theirs(h: jax.Array, key: jax.Array) -> jax.Array:
        return nn.dot_product_attention(
            h, h, h, dropout_rng=key, dropout_rate=0.1, broadcast_dropout=False
        )

    def growth(attend: Any) -> int:
        return scan_gradient_temp_bytes(attend, 8) - scan_gradient_temp_bytes(attend, 4)

    weights_per_layer = 4 * 4 * 128 * 128 * 4  # float32 [batch, heads, q, k]
    assert scan_gradient_temp_bytes(ours, 8) < scan_gradient_temp_bytes(none, 8) + weights_per_layer
    assert growth(ours) == growth(none)
    assert growth(functools.partial(ours, broadcast_dropout=False)) == growth(none)
    assert growth(theirs) >= growth(none) + 4 * weights_per_layer


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dropout_rate": 1.5}, ValueError, "rate=1.5"),
        ({"dropout_rate": -0.1}, ValueError, "rate=-0.1"),
        ({"dropout_rate": 0.1}, TypeError, "PRNG key is required"),
        (
            {"dropout_rate": 0.1, "dropout_rng": jax.random.split(jax.random.key(0))},
            TypeError,
            "vmap",
        ),
        ({"broadcast_dropout": 1}, TypeError, "broadcast_dropout"),
        ({"deterministic": None}, TypeError, "deterministic"),
        ({"unknown_option": 1}, TypeError, "unknown_option"),
        ({"qk_attn_weights_einsum": jnp.einsum}, ValueError, "together"),
        (
            {
                "qk_attn_weights_einsum": jnp.einsum,
                "attn_weights_value_einsum": jnp.einsum,
                "precision": "highest",
            },
            ValueError,
            "precision",
        ),
        ({"module": object()}, TypeError, "module"),
    ],
)
def test_bad_options_raise_clear_errors(kwargs: dict[str, Any], error: type, match: str) -> None:
    q, k, v = qkv()
    with pytest.raises(error, match=match):
        dx.dot_product_attention(q, k, v, **kwargs)


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((B, L, H, D), (B, L, H, D), (B, L, H)), "same rank"),
        (((B, L, H, D), (3, L, H, D), (3, L, H, D)), "batch axes"),
        (((B, L, H, D), (B, L, H, D + 1), (B, L, H, D)), "depth"),
        (((B, L, H, D), (B, L, H, D), (B, L + 1, H, D)), "length and number of heads"),
        (((B, L, 4, D), (B, L, 3, D), (B, L, 3, D)), "multiple"),
        (((L, D), (L, D), (L, D)), "at least 3"),
    ],
)
def test_mismatched_shapes_name_the_shapes(shapes: tuple[Any, ...], match: str) -> None:
    arrays = [jnp.ones(shape) for shape in shapes]
    with pytest.raises(ValueError, match=match):
        dx.dot_product_attention(*arrays)


def test_integer_inputs_are_rejected() -> None:
    q, k, v = qkv()
    with pytest.raises(TypeError, match="value must be a floating-point array"):
        dx.dot_product_attention(q, k, v.astype(jnp.int32))
