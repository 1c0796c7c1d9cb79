"""Exact properties of the functional transforms.

Every test here checks an identity that holds bit for bit (or, where XLA may
contract a multiply-add, to one rounding): the masks against their reference
definition, the kept values against the contract's formula, transformations
(jit, vmap, grad, scan, checkpoint) against the plain call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import assertions
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.extend.random import threefry_2x32
from jax.test_util import check_grads
from threefry_reference import threefry2x32

import dropoutx as dx
from dropoutx import _random

pytestmark = pytest.mark.usefixtures("strict_promotion")

KEY = jax.random.key(1234)
FLOAT_DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32]


def _annealed(key: Any, x: Any, rate: Any, **kwargs: Any) -> jax.Array:
    # A schedule that reaches `rate` at step 10, so the step is really used.
    schedule = optax.linear_schedule(0.0, rate, transition_steps=10)
    return dx.annealed_dropout(key, x, 10, schedule, **kwargs)


# Every transform behind one signature: (key, x, rate, **options).
TRANSFORMS: dict[str, Callable[..., jax.Array]] = {
    "inverted": dx.inverted_dropout,
    "vanilla": dx.vanilla_dropout,
    "annealed": _annealed,
    "gaussian_dropout": dx.gaussian_dropout,
    "gaussian_noise": dx.gaussian_noise,
}
WITH_BROADCAST = ["inverted", "vanilla", "annealed", "gaussian_dropout"]


def _reference_blocks(
    key: jax.Array, shape: tuple[int, ...], group: int
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """The 13-round numpy blocks of ``shape``'s elements, and each element's column.

    Axes of length 1 are dropped first. Element ``(row, c)`` (``row`` over the
    leading axes) has the block at counter ``(row, c // group)``.
    """
    shape = tuple(n for n in shape if n != 1)
    rows, columns = np.indices((math.prod(shape[:-1]), shape[-1] if shape else 1))
    key_words = tuple(int(word) for word in jax.random.key_data(key))
    words = threefry2x32(key_words, rows.ravel(), columns.ravel() // group, rounds=13)
    return words, columns.ravel()


def _reference_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> np.ndarray:
    """The documented mask, from a numpy Threefry-2x32 (13 rounds) and numpy indexing.

    Axes of length 1 are dropped first. Element ``(row, c)`` (``row`` over the
    leading axes) takes 16-bit lane ``c % 4`` of the block at counter ``(row, c
    // 4)`` and is kept at or above ``round(rate * 2**16)``. Other key
    implementations compare the top 16 of ``jax.random.bits``.
    """
    threshold = np.floor(np.float64(np.float32(rate)) * 2**16 + 0.5)
    if str(jax.random.key_impl(key)) != "threefry2x32":
        bits = np.asarray(jax.random.bits(key, tuple(n for n in shape if n != 1), jnp.uint32))
        return ((bits >> 16) >= threshold).reshape(shape)
    (word0, word1), columns = _reference_blocks(key, shape, 4)
    lane = columns % 4
    value = (np.where(lane < 2, word0, word1) >> (16 * (lane % 2))) & 0xFFFF
    return (value >= threshold).reshape(shape)


# Random123's known-answer vectors (tests/kat_vectors in its distribution):
# rounds, counter, key, output.
_KNOWN_ANSWERS = [
    (13, (0, 0), (0, 0), (0x9D1C5EC6, 0x8BD50731)),
    (13, (0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0xFD36D048, 0x2D17272C)),
    (13, (0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xBA3E4725, 0xF27D669E)),
    (20, (0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
]


@pytest.mark.parametrize(("rounds", "counter", "key", "expected"), _KNOWN_ANSWERS)
def test_threefry_reference_gives_random123_known_answers(
    rounds: int, counter: tuple[int, int], key: tuple[int, int], expected: tuple[int, int]
) -> None:
    words = threefry2x32(key, np.array([counter[0]]), np.array([counter[1]]), rounds)
    assert (int(words[0][0]), int(words[1][0])) == expected


def test_threefry_reference_at_20_rounds_is_jax_threefry() -> None:
    counters = np.arange(2 * 1000, dtype=np.uint32).reshape(2, 1000) * np.uint32(2654435761)
    key = np.array([0x12345678, 0x9ABCDEF0], np.uint32)
    ours = threefry2x32((int(key[0]), int(key[1])), counters[0], counters[1], rounds=20)
    theirs = np.asarray(threefry_2x32(jnp.asarray(key), jnp.asarray(counters.ravel())))
    np.testing.assert_array_equal(np.concatenate(ours), theirs)


def _x(shape: tuple[int, ...] = (16, 32), dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.normal(jax.random.key(7), shape, jnp.float32).astype(dtype)


# --- the masks and noise against their reference definitions -----------------


# (64,), (3, 96) and (2, 3, 32) go through whole packed words, (77,) and
# (3, 200) through packed words cut short at the end of a row; the others
# hash one block per element.
@pytest.mark.parametrize("rate", [1e-9, 0.1, 0.5, 0.77, 1 - 1e-7])
@pytest.mark.parametrize(
    "shape",
    [(), (1,), (33,), (4, 5, 6), (2, 3, 4, 5), (77,), (3, 200), (64,), (3, 96), (2, 3, 32)],
)
def test_keep_mask_equals_reference_bits(rate: float, shape: tuple[int, ...]) -> None:
    mask = dx.keep_mask(KEY, shape, rate)
    np.testing.assert_array_equal(mask, _reference_mask(KEY, shape, rate))


def _root_fusion(hlo: str, dtype: str) -> str:
    """The body of the fused computation that makes a compiled program's ``dtype`` output."""
    root = re.search(rf"ROOT \S+ = {dtype}\S+ fusion\(.*calls=%([\w.]+)", hlo)
    assert root is not None, f"no {dtype} output fusion"
    start = hlo.index(f"%{root.group(1)} (")
    return hlo[start : hlo.index("\n}\n", start)]


@pytest.mark.parametrize("shape", [(64,), (3, 96), (2, 3, 32), (3, 200)])
def test_packed_words_are_hashed_once_into_an_eighth_byte_per_element(
    shape: tuple[int, ...],
) -> None:
    """The words are a fusion of their own, and the masking that reads them hashes nothing.

    XLA would otherwise fuse the hash into the masking and evaluate it again
    for each of the 32 elements that read a word.
    """
    hlo = jax.jit(lambda key: dx.keep_mask(key, shape, 0.3)).lower(KEY).compile().as_text()
    assertions.assert_fusion_makes(hlo, "u32", (*shape[:-1], -(-shape[-1] // 32)))
    masking = _root_fusion(hlo, "pred")
    assert " xor(" not in masking and " add(" not in masking, masking


def test_keep_mask_broadcast_equals_reference_on_reduced_shape() -> None:
    mask = dx.keep_mask(KEY, (4, 5, 6), 0.3, broadcast_dims=(0, 2))
    reduced = _reference_mask(KEY, (1, 5, 1), 0.3)
    np.testing.assert_array_equal(mask, np.broadcast_to(reduced, (4, 5, 6)))


def _reference_normal(words: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The Box-Muller sample ``r sin(phi)`` of blocks ``words``, in float64, and its radius ``r``.

    ``u = (k + 1/2) 2**-31`` for the top 31 bits ``k`` of word 0, rounded to
    float32 as the definition has it (``k`` first, then the sum), radius
    ``sqrt(-2 ln u)``, angle ``phi = pi s / 2**32`` for word 1 read as a
    signed integer ``s``.
    """
    top = np.float32(words[0] >> np.uint32(1))
    uniform = np.float64(top * np.float32(2**-31) + np.float32(2**-32))
    radius = np.sqrt(-2 * np.log(uniform))
    signed = np.asarray(words[1], np.uint32).view(np.int32)
    return radius * np.sin(np.pi * (signed / 2.0**32)), radius


def _reference_noise(key: jax.Array, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The documented noise (float64) and each element's radius, from numpy.

    Axes of length 1 are dropped first. Element ``(row, c)`` takes the sample
    of the 13-round block at counter ``(row, c)``.
    """
    words, _ = _reference_blocks(key, shape, 1)
    sample, radius = _reference_normal(words)
    return sample.reshape(shape), radius.reshape(shape)


# Not bit for bit: float32 evaluates the logarithm, the square root and the
# sine polynomial with a few roundings, so a sample differs from the float64
# definition by at most 2.6e-7 times its radius (or 2.6e-7 below a radius of
# 1) in 8 million samples checked, a fifth of them in the tail, op by op and
# compiled (XLA's fusions round a little differently). The bound is
# 1.8 times that; a wrong counter or angle is off by the size of the samples.
_NOISE_TOLERANCE = 2**-21


def _assert_noise_near(ours: Any, expected: np.ndarray, radius: np.ndarray) -> None:
    error = np.abs(np.asarray(ours, np.float64) - expected)
    bound = _NOISE_TOLERANCE * np.maximum(radius, 1)
    assert np.all(error <= bound), float(np.max(error / bound))


@pytest.mark.parametrize(
    "shape", [(), (1,), (3,), (33,), (4, 5, 1, 7), (64, 48), (77,), (3, 201), (2, 3, 32)]
)
def test_standard_normal_equals_reference_noise(shape: tuple[int, ...]) -> None:
    """Op by op and compiled as one program, whose fusions XLA may round differently."""
    expected = _reference_noise(KEY, shape)
    _assert_noise_near(_random.standard_normal(KEY, shape), *expected)
    _assert_noise_near(jax.jit(_random.standard_normal, static_argnums=1)(KEY, shape), *expected)


def test_box_muller_at_extreme_words() -> None:
    """Angles at and beside 0 and the ends of the half turn, radii from the smallest u to u = 1.

    Word 0 of 0 or 1 gives ``u = 2**-32``, the largest radius, ``sqrt(64 ln
    2) = 6.66``, reached at ``phi = -pi/2`` (word 1 of ``2**31``); word 0 of
    ``2**32 - 1`` rounds ``u`` to 1, radius 0, as word 1 of 0 gives ``phi =
    0``.
    """
    edges = np.array([0, 2**31, 2**32], np.int64)[:, None] + np.array([-1, 0, 1], np.int64)
    rng = np.random.default_rng(0)
    angles = np.concatenate([edges.ravel() % 2**32, rng.integers(0, 2**32, 100_000)])
    radii = np.array([0, 1, 2, 3, 2**20, 2**31, 2**32 - 1], np.uint32)
    word0, word1 = (w.ravel() for w in np.meshgrid(radii, angles.astype(np.uint32)))
    ours = np.asarray(_random._box_muller(jnp.asarray(word0), jnp.asarray(word1)))
    _assert_noise_near(ours, *_reference_normal((word0, word1)))
    largest = ours[(word0 <= 1) & (word1 == 2**31)]
    np.testing.assert_allclose(largest, -math.sqrt(64 * math.log(2)), 1e-6)
    assert np.all(ours[word0 == 2**32 - 1] == 0)
    assert np.all(ours[word1 == 0] == 0)


def test_log_is_within_its_bound_for_every_mantissa() -> None:
    """``_log`` of every float32 in ``[1/2, 1)``, and of every power of two down to ``2**-32``.

    Every mantissa, so every ``t`` the polynomial sees, is in the first set;
    other binades add a multiple of ``ln 2`` to the same ``t P(t)``. The
    documented bound is a relative error of 1.7e-7.
    """
    half_to_one = (np.arange(2**23, dtype=np.int32) + np.int32(126 << 23)).view(np.float32)
    powers = np.float32(2.0) ** -np.arange(0, 33, dtype=np.float32)
    u = np.concatenate([half_to_one, powers, powers * np.float32(0.75)])
    ours = np.asarray(_random._log(jnp.asarray(u)), np.float64)
    exact = np.log(u.astype(np.float64))
    error = np.abs(ours - exact)
    assert np.all(error <= 1.7e-7 * np.abs(exact)), float(np.max(error / np.abs(exact)))
    assert ours[half_to_one.size] == 0  # ln 1, exactly
    # Box-Muller's -2 ln u scales the constants instead: the same bits, doubled and negated.
    doubled = np.asarray(_random._log(jnp.asarray(u), -2.0), np.float64)
    np.testing.assert_array_equal(doubled, -2 * ours)


@pytest.mark.parametrize("shape", [(64, 48), (77,), (3, 201)])
def test_noise_fuses_into_its_consumer_with_nothing_kept(shape: tuple[int, ...]) -> None:
    """Each element hashes its own block inside the one fusion that makes the noisy output."""
    x = jnp.ones(shape)
    compiled = jax.jit(lambda key: dx.gaussian_noise(key, x, 0.5)).lower(KEY).compile()
    hlo = compiled.as_text()
    assert hlo.count(" fusion(") == 1, hlo
    consumer = _root_fusion(hlo, "f32")
    assert " xor(" in consumer and " sqrt(" in consumer, consumer
    # Kept samples or blocks would take at least 4 bytes per element.
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < math.prod(shape), temp


def test_raw_and_typed_keys_agree() -> None:
    x = _x()
    raw = jax.random.PRNGKey(5)
    typed = jax.random.wrap_key_data(raw)
    for name, fn in TRANSFORMS.items():
        np.testing.assert_array_equal(fn(raw, x, 0.4), fn(typed, x, 0.4), err_msg=name)


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg", "philox2x32", "philox4x32", "threefry4x32"])
def test_other_key_implementations_use_jax_random(impl: str) -> None:
    key = jax.random.key(3, impl=impl)
    np.testing.assert_array_equal(
        dx.keep_mask(key, (8, 9), 0.25), _reference_mask(key, (8, 9), 0.25)
    )
    np.testing.assert_array_equal(
        _random.standard_normal(key, (8, 9)), jax.random.normal(key, (8, 9), jnp.float32)
    )


# --- the contract's formulas, exactly ----------------------------------------


@pytest.mark.parametrize("dtype", [*FLOAT_DTYPES])
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.9])
def test_inverted_kept_values_are_rounded_once(dtype: Any, rate: float) -> None:
    x = _x(dtype=dtype)
    y = dx.inverted_dropout(KEY, x, rate)
    scaled = (x.astype(jnp.float32) / (1 - rate)).astype(dtype)
    expected = jnp.where(dx.keep_mask(KEY, x.shape, rate), scaled, jnp.zeros((), dtype))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_traced_rate_gives_the_same_result_as_python_rate(dtype: Any) -> None:
    x = _x(dtype=dtype)
    for name, fn in TRANSFORMS.items():
        traced = jax.jit(lambda r, fn=fn: fn(KEY, x, r))(jnp.float32(0.25))
        np.testing.assert_array_equal(traced, fn(KEY, x, 0.25), err_msg=name)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_vanilla_training_and_inference(dtype: Any) -> None:
    x = _x(dtype=dtype)
    y = dx.vanilla_dropout(KEY, x, 0.3)
    np.testing.assert_array_equal(
        y, jnp.where(dx.keep_mask(KEY, x.shape, 0.3), x, jnp.zeros((), dtype))
    )
    inference = dx.vanilla_dropout(None, x, 0.3, deterministic=True)
    np.testing.assert_array_equal(inference, (x.astype(jnp.float32) * (1 - 0.3)).astype(dtype))


def test_inverted_and_vanilla_share_the_mask() -> None:
    x = _x() + 10  # no zeros in x, so zeros in y are exactly the dropped units
    inverted = dx.inverted_dropout(KEY, x, 0.6)
    vanilla = dx.vanilla_dropout(KEY, x, 0.6)
    np.testing.assert_array_equal(inverted == 0, vanilla == 0)


def _assert_within_float32_rounding(
    y: jax.Array, exact: jax.Array, magnitude: jax.Array, dtype: Any
) -> None:
    """``y`` equals ``exact`` up to float32 rounding of the intermediates.

    XLA may contract a multiply-add into one FMA, so ``y`` can differ from the
    unfused reference by two float32 roundings of the largest intermediate
    (``magnitude``) before the single cast to ``dtype``, which adds at most
    half an ulp of ``dtype``.
    """
    exact32 = exact.astype(jnp.float32)
    bound = 2 * np.float32(jnp.finfo(jnp.float32).eps) * magnitude + np.float32(
        jnp.finfo(dtype).eps
    ) * jnp.abs(exact32)
    error = jnp.abs(y.astype(jnp.float32) - exact32)
    assert bool((error <= bound).all()), float(jnp.max(error - bound))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_gaussian_dropout_formula(dtype: Any) -> None:
    x = _x(dtype=dtype)
    rate = 0.2
    eps = _random.standard_normal(KEY, x.shape)
    sigma = np.float32(math.sqrt(rate / (1 - rate)))
    wide = x.astype(jnp.float32)
    y = dx.gaussian_dropout(KEY, x, rate)
    assert y.dtype == dtype
    magnitude = jnp.abs(wide) * (1 + jnp.abs(sigma * eps))
    _assert_within_float32_rounding(y, wide * (1 + sigma * eps), magnitude, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_gaussian_noise_formula(dtype: Any) -> None:
    x = _x(dtype=dtype)
    eps = _random.standard_normal(KEY, x.shape)
    wide = x.astype(jnp.float32)
    y = dx.gaussian_noise(KEY, x, 0.3)
    assert y.dtype == dtype
    magnitude = jnp.abs(wide) + jnp.abs(np.float32(0.3) * eps)
    _assert_within_float32_rounding(y, wide + np.float32(0.3) * eps, magnitude, dtype)


def test_annealed_absorbs_schedule_rounding_at_the_end_point() -> None:
    # optax.linear_schedule(0.5, 0.0, 20) is -7.45e-9 at step 20 under jit.
    schedule = optax.linear_schedule(0.5, 0.0, transition_steps=20)
    x = _x()
    step_fn = jax.jit(lambda step: dx.annealed_dropout(KEY, x, step, schedule))
    np.testing.assert_array_equal(step_fn(jnp.int32(20)), x)
    np.testing.assert_array_equal(dx.annealed_dropout(KEY, x, 20, schedule), x)
    below = jax.jit(lambda s: dx.annealed_dropout(KEY, x, s, lambda s: s))(jnp.float32(-1e-3))
    assert jnp.isnan(below).all()


def test_annealed_follows_the_schedule() -> None:
    schedule = optax.linear_schedule(0.8, 0.0, transition_steps=100)
    x = _x()
    for step in [0, 37, 100, 250]:
        rate = float(schedule(step))
        np.testing.assert_array_equal(
            dx.annealed_dropout(KEY, x, step, schedule),
            dx.inverted_dropout(KEY, x, jnp.float32(rate)),
            err_msg=f"step={step}",
        )
    np.testing.assert_array_equal(dx.annealed_dropout(KEY, x, 100, schedule), x)


@pytest.mark.parametrize("name", WITH_BROADCAST)
def test_broadcast_dims_share_one_value(name: str) -> None:
    x = jnp.ones((3, 5, 7))
    y = TRANSFORMS[name](KEY, x, 0.5, broadcast_dims=(0, -1))
    np.testing.assert_array_equal(y, jnp.broadcast_to(y[:1, :, :1], y.shape))
    assert len(np.unique(np.asarray(y[0, :, 0]))) > 1


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_deterministic_needs_no_key(name: str) -> None:
    x = _x(dtype=jnp.bfloat16)
    y = TRANSFORMS[name](None, x, 0.4, deterministic=True)
    expected = dx.vanilla_dropout(None, x, 0.4, deterministic=True) if name == "vanilla" else x
    np.testing.assert_array_equal(y, expected)


# --- rate 0 and rate 1, Python and traced --------------------------------------


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("traced", [False, True])
def test_rate_zero_is_identity(name: str, traced: bool) -> None:
    x = _x()
    fn = TRANSFORMS[name]
    if traced:
        y = jax.jit(lambda r: fn(KEY, x, r))(jnp.float32(0.0))
    else:
        y = fn(KEY, x, 0.0)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("name", ["inverted", "vanilla", "annealed"])
@pytest.mark.parametrize("traced", [False, True])
def test_rate_one_gives_zeros_and_finite_gradients(name: str, traced: bool) -> None:
    x = _x()
    fn = TRANSFORMS[name]
    rate = jnp.float32(1.0) if traced else 1.0

    def loss(x: jax.Array, rate: Any) -> jax.Array:
        return jnp.sum(fn(KEY, x, rate) * x)

    np.testing.assert_array_equal(fn(KEY, x, rate), jnp.zeros_like(x))
    grad_x = jax.grad(loss)(x, rate)
    np.testing.assert_array_equal(grad_x, jnp.zeros_like(x))
    if traced:
        assert jnp.isfinite(jax.grad(loss, argnums=1)(x, rate))


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("rate", [0.0, 0.999])
def test_edge_rates_give_finite_gradients_for_traced_rate(name: str, rate: float) -> None:
    x = _x()

    def loss(x: jax.Array, rate: jax.Array) -> jax.Array:
        return jnp.sum(TRANSFORMS[name](KEY, x, rate) ** 2)

    grads = jax.grad(loss, argnums=(0, 1))(x, jnp.float32(rate))
    for grad in grads:
        assert jnp.isfinite(grad).all()


# --- transformations ------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_eager_equals_jit(name: str, dtype: Any) -> None:
    x = _x((64, 64), dtype=dtype)
    fn = TRANSFORMS[name]
    eager = fn(KEY, x, 0.3)
    np.testing.assert_array_equal(jax.jit(lambda k, x: fn(k, x, 0.3))(KEY, x), eager)
    # Fused with surrounding work, the transform still rounds the same way.
    fused = jax.jit(lambda k, x: fn(k, jnp.negative(x), 0.3) * 2)(KEY, -x)
    np.testing.assert_array_equal(fused, (eager.astype(jnp.float32) * 2).astype(dtype))


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("raw", [False, True])
def test_vmap_over_keys_equals_python_loop(name: str, raw: bool) -> None:
    fn = TRANSFORMS[name]
    keys = jax.random.split(KEY, 5)
    if raw:
        keys = jax.random.key_data(keys)
    x = _x((8, 6))
    batched = jax.vmap(lambda k: fn(k, x, 0.4))(keys)
    looped = jnp.stack([fn(k, x, 0.4) for k in keys])
    np.testing.assert_array_equal(batched, looped)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_vmap_over_keys_inputs_and_rates(name: str) -> None:
    fn = TRANSFORMS[name]
    keys = jax.random.split(KEY, 4)
    xs = _x((4, 10))
    rates = jnp.array([0.0, 0.2, 0.5, 0.7], jnp.float32)
    batched = jax.vmap(fn)(keys, xs, rates)
    looped = jnp.stack([fn(k, x, r) for k, x, r in zip(keys, xs, rates, strict=True)])
    np.testing.assert_array_equal(batched, looped)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_inverted_gradient_is_mask_over_keep(rate: float) -> None:
    x = _x()
    grad = jax.grad(lambda x: jnp.sum(dx.inverted_dropout(KEY, x, rate)))(x)
    mask = dx.keep_mask(KEY, x.shape, rate)
    np.testing.assert_array_equal(grad, mask.astype(jnp.float32) / np.float32(1 - rate))


def test_vanilla_gradient_is_mask() -> None:
    x = _x()
    grad = jax.grad(lambda x: jnp.sum(dx.vanilla_dropout(KEY, x, 0.4)))(x)
    np.testing.assert_array_equal(grad, dx.keep_mask(KEY, x.shape, 0.4).astype(jnp.float32))


def test_gaussian_dropout_gradient_is_the_multiplier() -> None:
    x = _x()
    grad = jax.grad(lambda x: jnp.sum(dx.gaussian_dropout(KEY, x, 0.3)))(x)
    multiplier = dx.gaussian_dropout(KEY, jnp.ones_like(x), 0.3)
    np.testing.assert_array_equal(grad, multiplier)


def test_gradient_with_respect_to_traced_rate_holds_the_mask_fixed() -> None:
    x = _x()
    rate = jnp.float32(0.25)
    grad = jax.grad(lambda r: jnp.sum(dx.inverted_dropout(KEY, x, r)))(rate)
    mask = dx.keep_mask(KEY, x.shape, 0.25)
    expected = jnp.sum(jnp.where(mask, x, 0)) / (1 - rate) ** 2
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_check_grads(name: str) -> None:
    fn = TRANSFORMS[name]
    x = _x((4, 6))
    check_grads(lambda x: fn(KEY, x, 0.3), (x,), order=2, modes=["fwd", "rev"])


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_backward_pass_stores_no_per_element_residual(name: str) -> None:
    from jax._src.ad_checkpoint import saved_residuals

    fn = TRANSFORMS[name]
    x = _x((64, 64))
    residuals = saved_residuals(lambda x: fn(KEY, x, 0.3), x)
    sizes = [math.prod(aval.shape) for aval, _ in residuals]
    assert all(size <= 2 for size in sizes), residuals


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_inside_scan_equals_python_loop(name: str) -> None:
    fn = TRANSFORMS[name]
    xs = _x((5, 3, 4))

    def body(carry: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        step, x = inputs
        y = fn(jax.random.fold_in(KEY, step), x + carry, 0.3)
        return jnp.tanh(y), y

    _, scanned = jax.lax.scan(body, jnp.zeros((3, 4)), (jnp.arange(5), xs))
    carry = jnp.zeros((3, 4))
    looped = []
    for step in range(5):
        y = fn(jax.random.fold_in(KEY, step), xs[step] + carry, 0.3)
        carry = jnp.tanh(y)
        looped.append(y)
    np.testing.assert_allclose(scanned, jnp.stack(looped), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_under_checkpoint(name: str) -> None:
    fn = TRANSFORMS[name]
    x = _x()

    def loss(x: jax.Array) -> jax.Array:
        return jnp.sum(jnp.sin(fn(KEY, jnp.cos(x), 0.3)))

    np.testing.assert_array_equal(jax.checkpoint(loss)(x), loss(x))
    np.testing.assert_allclose(
        jax.grad(jax.checkpoint(loss))(x), jax.grad(loss)(x), rtol=1e-6, atol=1e-7
    )


# --- no recompilation -----------------------------------------------------------


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_traced_rate_does_not_recompile(name: str) -> None:
    fn = TRANSFORMS[name]
    x = _x()
    traces = []

    @jax.jit
    def step(rate: jax.Array) -> jax.Array:
        traces.append(rate)
        return fn(KEY, x, rate)

    for rate in [0.0, 0.1, 0.5, 0.9]:
        step(jnp.float32(rate))
    assert len(traces) == 1


def test_annealed_step_does_not_recompile() -> None:
    decay = optax.cosine_decay_schedule(0.5, decay_steps=1000)
    x = _x()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def train_step(step: jax.Array) -> jax.Array:
        # optax's cosine schedule mixes Python floats with the step's dtype,
        # which strict promotion rejects; a float step is what it expects.
        return dx.annealed_dropout(
            jax.random.fold_in(KEY, step), x, step.astype(jnp.float32), decay
        )

    for step in range(0, 1200, 100):
        train_step(jnp.int32(step))


def test_python_rates_share_one_compilation() -> None:
    from dropoutx import _bernoulli

    x = _x((3, 17))
    dx.inverted_dropout(KEY, x, 0.11)
    before = _bernoulli._masked._cache_size()
    for rate in [0.12, 0.13, 0.5, 0.77]:
        dx.inverted_dropout(KEY, x, rate)
    assert _bernoulli._masked._cache_size() == before


def test_transforms_that_share_a_body_share_its_compilation() -> None:
    # The public function's name is not a static argument of the jitted body,
    # so inverted dropout, its alias, drop path, spatial and annealed dropout
    # compile `_masked` once per shape and broadcast_dims between them.
    from dropoutx import _bernoulli

    vector = _x((19,))  # drop path on a vector: broadcast_dims ()
    dx.inverted_dropout(KEY, vector, 0.3)
    before = _bernoulli._masked._cache_size()
    dx.drop_path(KEY, vector, 0.4)
    dx.dropout(KEY, vector, 0.2)
    dx.annealed_dropout(KEY, vector, 0, lambda step: 0.6)
    assert _bernoulli._masked._cache_size() == before

    images = _x((2, 3, 5, 7))  # NHWC: spatial dropout broadcasts over (1, 2)
    dx.spatial_dropout(KEY, images, 0.5)
    before = _bernoulli._masked._cache_size()
    dx.inverted_dropout(KEY, images, 0.25, broadcast_dims=(1, 2))
    dx.drop_path(KEY, _x((2, 3, 5, 7)), 0.5, scale_by_keep=True)
    assert _bernoulli._masked._cache_size() == before + 1  # drop path: (1, 2, 3)


def test_traced_check_names_the_function_that_was_called_after_a_shared_compile() -> None:
    from jax.experimental import checkify

    vector = _x((23,))
    for name, fn in [("inverted_dropout", dx.inverted_dropout), ("drop_path", dx.drop_path)]:
        checked = checkify.checkify(jax.jit(lambda r, fn=fn: fn(KEY, vector, r)))
        error, y = checked(jnp.float32(1.5))
        assert f"dropoutx.{name}: rate must be in [0, 1]" in (error.get() or ""), name
        assert jnp.isnan(y).all()


# --- float64 ------------------------------------------------------------------


def test_float64_computes_in_float64() -> None:
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (8, 8), jnp.float64)
        y = dx.inverted_dropout(KEY, x, 0.3)
        assert y.dtype == jnp.float64
        mask = dx.keep_mask(KEY, x.shape, 0.3)
        np.testing.assert_array_equal(y, jnp.where(mask, x / (1 - 0.3), 0.0))
        inference = dx.vanilla_dropout(None, x, 0.3, deterministic=True)
        np.testing.assert_array_equal(inference, x * (1 - 0.3))
        for name, fn in TRANSFORMS.items():
            assert fn(KEY, x, 0.3).dtype == jnp.float64, name


def test_zero_size_and_scalar_inputs() -> None:
    for name, fn in TRANSFORMS.items():
        assert fn(KEY, jnp.zeros((0, 4)), 0.5).shape == (0, 4), name
        assert fn(KEY, jnp.float32(2.0), 0.5).shape == (), name
