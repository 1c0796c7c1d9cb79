"""Alpha dropout, drop path, spatial dropout and Monte-Carlo dropout.

Exact properties are checked exactly (masks against ``keep_mask``, values
against their formula to one rounding, transformations against the plain
call). Statistical checks allow 6 standard errors: the two-sided normal tail
beyond 6 sigma is 2.0e-9, so with fewer than 50 such checks in this file a
correct implementation fails spuriously less than once in 10^7 runs (well
under the project's 10^-4). The keys are fixed, so the suite is reproducible.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import assertions
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.test_util import check_grads

import dropoutx as dx
from dropoutx._alpha import SELU_SATURATION

pytestmark = pytest.mark.usefixtures("strict_promotion")

KEY = jax.random.key(2024)
SIGMAS = 6.0
FLOAT_DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32]

# Every rate transform of this module behind one signature (key, x, rate, **options).
TRANSFORMS: dict[str, Callable[..., jax.Array]] = {
    "alpha_dropout": dx.alpha_dropout,
    "drop_path": dx.drop_path,
    "spatial_dropout": dx.spatial_dropout,
}


def _x(shape: tuple[int, ...] = (8, 6, 5), dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.normal(jax.random.key(7), shape, jnp.float32).astype(dtype)


_assert_near = functools.partial(assertions.assert_near, sigmas=SIGMAS)


_raises = assertions.raises


def _alpha_reference(rate: float) -> tuple[float, float]:
    """Klambauer et al.'s ``(a, b)``, in float64."""
    a = ((1 - rate) * (1 + rate * SELU_SATURATION**2)) ** -0.5
    return a, -a * SELU_SATURATION * rate


# --- alpha dropout ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("rate", [0.05, 0.3, 0.7])
def test_alpha_formula_to_one_rounding(dtype: Any, rate: float) -> None:
    x = _x(dtype=dtype)
    y = dx.alpha_dropout(KEY, x, rate)
    assert y.dtype == dtype and y.shape == x.shape
    a, b = _alpha_reference(rate)
    mask = np.asarray(dx.keep_mask(KEY, x.shape, rate))
    wide = np.asarray(x.astype(jnp.float32), np.float64)
    exact = np.where(mask, a * wide + b, a * SELU_SATURATION + b)
    # float32 arithmetic on (x + b / a) * a: a few float32 roundings of the
    # largest intermediate, then one rounding to `dtype` (half an ulp).
    magnitude = a * (np.abs(wide) + abs(b / a) + abs(SELU_SATURATION))
    bound = 4 * np.finfo(np.float32).eps * magnitude + float(jnp.finfo(dtype).eps) * np.abs(exact)
    error = np.abs(np.asarray(y.astype(jnp.float32), np.float64) - exact)
    assert (error <= bound).all(), float(np.max(error - bound))


def test_alpha_dropped_units_share_one_value_and_follow_the_mask() -> None:
    x = _x((64, 64))
    y = dx.alpha_dropout(KEY, x, 0.4)
    mask = dx.keep_mask(KEY, x.shape, 0.4)
    dropped = np.asarray(y)[~np.asarray(mask)]
    a, b = _alpha_reference(0.4)
    assert dropped.size > 0 and len(np.unique(dropped)) == 1
    np.testing.assert_allclose(dropped[0], a * SELU_SATURATION + b, rtol=1e-6)


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5, 0.9])
def test_alpha_keeps_mean_zero_and_variance_one(rate: float) -> None:
    n = 1_000_000
    x = jax.random.normal(jax.random.key(11), (n,), jnp.float32)
    y = np.asarray(dx.alpha_dropout(jax.random.key(12), x, rate), np.float64)
    # y = a x + b with probability 1 - rate, a alpha' + b otherwise, iid; its
    # exact mean is 0 and variance 1. The mean of y**2 about the known mean 0
    # has standard error sqrt((E[y**4] - 1) / n), with E[(a x + b)**4] = 3a^4 +
    # 6a^2b^2 + b^4 for x ~ N(0, 1).
    a, b = _alpha_reference(rate)
    fourth = (1 - rate) * (3 * a**4 + 6 * a**2 * b**2 + b**4) + rate * (
        a * SELU_SATURATION + b
    ) ** 4
    _assert_near(float(y.mean()), 0.0, 1 / math.sqrt(n), f"mean at rate={rate}")
    _assert_near(float(np.mean(y**2)), 1.0, math.sqrt((fourth - 1) / n), f"var at rate={rate}")


def test_feature_alpha_dropout_broadcasts() -> None:
    x = _x((4, 9, 16))  # (N, W, C): one decision per (example, channel)
    y = dx.alpha_dropout(KEY, x, 0.5, broadcast_dims=(1,))
    mask = dx.keep_mask(KEY, x.shape, 0.5, broadcast_dims=(1,))
    a, b = _alpha_reference(0.5)
    np.testing.assert_allclose(
        y, np.where(mask, a * np.asarray(x) + b, a * SELU_SATURATION + b), rtol=1e-5, atol=1e-6
    )
    assert 0 < float(mask[:, 0, :].mean()) < 1


@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_alpha_gradient_is_scale_times_mask(rate: float) -> None:
    x = _x()
    grad = jax.grad(lambda x: jnp.sum(dx.alpha_dropout(KEY, x, rate)))(x)
    a, _ = _alpha_reference(rate)
    expected = np.asarray(dx.keep_mask(KEY, x.shape, rate), np.float64) * a
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_alpha_float64() -> None:
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (16, 16), jnp.float64)
        y = dx.alpha_dropout(KEY, x, 0.3)
        assert y.dtype == jnp.float64
        a, b = _alpha_reference(0.3)
        mask = np.asarray(dx.keep_mask(KEY, x.shape, 0.3))
        exact = np.where(mask, a * np.asarray(x) + b, a * SELU_SATURATION + b)
        np.testing.assert_allclose(y, exact, rtol=1e-14, atol=1e-14)


# --- drop path ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_drop_path_keeps_or_drops_whole_examples(dtype: Any, rate: float) -> None:
    x = _x((32, 3, 4), dtype)
    y = dx.drop_path(KEY, x, rate)
    assert y.dtype == dtype and y.shape == x.shape
    kept = dx.keep_mask(KEY, (32,), rate)[:, None, None]
    scaled = (x.astype(jnp.float32) / (1 - rate)).astype(dtype)
    np.testing.assert_array_equal(y, jnp.where(kept, scaled, jnp.zeros((), dtype)))
    unscaled = dx.drop_path(KEY, x, rate, scale_by_keep=False)
    np.testing.assert_array_equal(unscaled, jnp.where(kept, x, jnp.zeros((), dtype)))


def test_drop_path_equals_inverted_dropout_broadcast_over_non_batch_axes() -> None:
    x = _x((6, 2, 3, 4))
    expected = dx.inverted_dropout(KEY, x, 0.3, broadcast_dims=(1, 2, 3))
    np.testing.assert_array_equal(dx.drop_path(KEY, x, 0.3), expected)
    # Rank 1: every element is an example.
    v = _x((50,))
    np.testing.assert_array_equal(dx.drop_path(KEY, v, 0.3), dx.inverted_dropout(KEY, v, 0.3))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_drop_path_keep_fraction_is_binomial(rate: float) -> None:
    n = 200_000
    y = dx.drop_path(jax.random.key(13), jnp.ones((n, 3)), rate)
    rows = np.asarray(y)
    assert (rows == rows[:, :1]).all()  # whole examples
    keep = 1 - rate
    _assert_near(float((rows[:, 0] != 0).mean()), keep, math.sqrt(keep * rate / n), "keep")
    np.testing.assert_array_equal(np.unique(rows), [0.0, np.float32(1) / np.float32(keep)])


def test_drop_path_inference_is_identity_either_way() -> None:
    x = _x(dtype=jnp.bfloat16)
    for scale_by_keep in [True, False]:
        y = dx.drop_path(None, x, 0.4, deterministic=True, scale_by_keep=scale_by_keep)
        np.testing.assert_array_equal(y, x)


def test_drop_path_gradient_is_mask_over_keep() -> None:
    x = _x((16, 4))
    grad = jax.grad(lambda x: jnp.sum(dx.drop_path(KEY, x, 0.25)))(x)
    mask = dx.keep_mask(KEY, (16,), 0.25)[:, None].astype(jnp.float32)
    np.testing.assert_array_equal(grad, jnp.broadcast_to(mask / np.float32(0.75), x.shape))


# --- spatial dropout ----------------------------------------------------------------

LAYOUTS = [
    # (shape, channel_axis, spatial axes = the broadcast_dims of the recipe)
    ((4, 9, 6), -1, (1,)),  # NWC
    ((4, 5, 7, 6), -1, (1, 2)),  # NHWC
    ((4, 3, 5, 7, 6), -1, (1, 2, 3)),  # NDHWC
    ((4, 6, 9), 1, (2,)),  # NCW
    ((4, 6, 5, 7), 1, (2, 3)),  # NCHW
    ((4, 6, 3, 5, 7), 1, (2, 3, 4)),  # NCDHW
]


@pytest.mark.parametrize(("shape", "channel_axis", "spatial"), LAYOUTS)
def test_spatial_dropout_layouts(
    shape: tuple[int, ...], channel_axis: int, spatial: tuple[int, ...]
) -> None:
    x = _x(shape) + 10  # no zeros in x, so zeros in y are the dropped units
    y = dx.spatial_dropout(KEY, x, 0.5, channel_axis=channel_axis)
    np.testing.assert_array_equal(y, dx.inverted_dropout(KEY, x, 0.5, broadcast_dims=spatial))
    dropped = np.asarray(y == 0)
    # Constant over the spatial axes, varying over (example, channel).
    reduced = dropped[
        tuple(slice(0, 1) if axis in spatial else slice(None) for axis in range(len(shape)))
    ]
    np.testing.assert_array_equal(dropped, np.broadcast_to(reduced, shape))
    assert 0 < reduced.mean() < 1


def test_spatial_dropout_unbatched_under_vmap() -> None:
    xs = _x((5, 4, 4, 8)) + 10
    keys = jax.random.split(KEY, 5)
    y = jax.vmap(lambda k, x: dx.spatial_dropout(k, x, 0.5, batch_axis=None))(keys, xs)
    for i in range(5):
        expected = dx.inverted_dropout(keys[i], xs[i], 0.5, broadcast_dims=(0, 1))
        np.testing.assert_array_equal(y[i], expected)
    dropped = np.asarray(y == 0)
    np.testing.assert_array_equal(dropped, np.broadcast_to(dropped[:, :1, :1, :], dropped.shape))


# --- shared conventions, for every transform -------------------------------------------


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("traced", [False, True])
def test_rate_zero_is_identity(name: str, traced: bool) -> None:
    x = _x()
    fn = TRANSFORMS[name]
    y = jax.jit(lambda r: fn(KEY, x, r))(jnp.float32(0.0)) if traced else fn(KEY, x, 0.0)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("traced", [False, True])
def test_rate_one_gives_zeros_and_finite_gradients(name: str, traced: bool) -> None:
    x = _x()
    fn = TRANSFORMS[name]
    rate = jnp.float32(1.0) if traced else 1.0

    def loss(x: jax.Array, rate: Any) -> jax.Array:
        return jnp.sum(fn(KEY, x, rate) * x)

    np.testing.assert_array_equal(fn(KEY, x, rate), jnp.zeros_like(x))
    np.testing.assert_array_equal(jax.grad(loss)(x, rate), jnp.zeros_like(x))
    if traced:
        assert jnp.isfinite(jax.grad(loss, argnums=1)(x, rate))


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("rate", [0.0, 0.999, 1.0])
def test_edge_rates_give_finite_output_and_gradients_for_traced_rate(
    name: str, rate: float
) -> None:
    x = _x()

    def loss(x: jax.Array, rate: jax.Array) -> jax.Array:
        return jnp.sum(TRANSFORMS[name](KEY, x, rate) ** 2)

    assert jnp.isfinite(TRANSFORMS[name](KEY, x, jnp.float32(rate))).all()
    for grad in jax.grad(loss, argnums=(0, 1))(x, jnp.float32(rate)):
        assert jnp.isfinite(grad).all()


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_traced_rate_equals_python_rate_and_dtype_is_kept(name: str, dtype: Any) -> None:
    x = _x(dtype=dtype)
    fn = TRANSFORMS[name]
    y = fn(KEY, x, 0.3)
    assert y.dtype == dtype
    np.testing.assert_array_equal(jax.jit(lambda r: fn(KEY, x, r))(jnp.float32(0.3)), y)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_float64_input_stays_float64(name: str) -> None:
    with jax.enable_x64(True):
        assert TRANSFORMS[name](KEY, _x(dtype=jnp.float64), 0.3).dtype == jnp.float64


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_deterministic_needs_no_key(name: str) -> None:
    x = _x(dtype=jnp.bfloat16)
    np.testing.assert_array_equal(TRANSFORMS[name](None, x, 0.4, deterministic=True), x)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_raw_and_typed_keys_agree(name: str) -> None:
    raw = jax.random.PRNGKey(5)
    fn = TRANSFORMS[name]
    np.testing.assert_array_equal(fn(raw, _x(), 0.4), fn(jax.random.wrap_key_data(raw), _x(), 0.4))


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_eager_equals_jit(name: str) -> None:
    x = _x(dtype=jnp.bfloat16)
    fn = TRANSFORMS[name]
    np.testing.assert_array_equal(jax.jit(lambda k, x: fn(k, x, 0.3))(KEY, x), fn(KEY, x, 0.3))


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_vmap_over_keys_inputs_and_rates_equals_python_loop(name: str) -> None:
    fn = TRANSFORMS[name]
    keys = jax.random.split(KEY, 4)
    xs = _x((4, 6, 5, 3))
    rates = jnp.array([0.0, 0.2, 0.5, 1.0], jnp.float32)
    batched = jax.vmap(fn)(keys, xs, rates)
    looped = jnp.stack([fn(k, x, r) for k, x, r in zip(keys, xs, rates, strict=True)])
    if name == "alpha_dropout":
        # The loop passes concrete rates, whose affine coefficients are
        # computed in float64 and rounded once; vmap traces the rates, so they
        # are computed in float32: the two may differ by one float32 rounding.
        np.testing.assert_allclose(batched, looped, rtol=2**-23, atol=2**-24)
    else:
        np.testing.assert_array_equal(batched, looped)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_check_grads(name: str) -> None:
    fn = TRANSFORMS[name]
    # Each transform is affine in x for a fixed key, so a large step is exact
    # and keeps float32 rounding out of the finite differences.
    check_grads(
        lambda x: fn(KEY, x, 0.3), (_x((4, 3, 2)),), order=1, modes=["fwd", "rev"], eps=1e-2
    )
    # With respect to a traced rate too, in float64 so that finite differences
    # are accurate (the mask is a step function of the rate, constant within
    # 1e-4 of 0.3 for this key and shape).
    with jax.enable_x64(True):
        x64 = _x((4, 3, 2), jnp.float64)
        check_grads(lambda r: fn(KEY, x64, r), (jnp.float64(0.3),), order=1, eps=1e-4)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_backward_pass_stores_no_per_element_residual(name: str) -> None:
    from jax._src.ad_checkpoint import saved_residuals

    residuals = saved_residuals(lambda x: TRANSFORMS[name](KEY, x, 0.3), _x((64, 8, 8)))
    assert all(math.prod(aval.shape) <= 2 for aval, _ in residuals), residuals


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_traced_rate_does_not_recompile(name: str) -> None:
    fn = TRANSFORMS[name]
    x = _x()

    traces = []

    @jax.jit
    def step(rate: jax.Array) -> jax.Array:
        traces.append(rate)
        return fn(KEY, x, rate)

    for rate in [0.0, 0.1, 0.5, 0.9, 1.0]:
        step(jnp.float32(rate))
    assert len(traces) == 1


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_inside_scan_equals_python_loop(name: str) -> None:
    fn = TRANSFORMS[name]
    xs = _x((5, 3, 4, 2))

    def body(carry: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        step, x = inputs
        y = fn(jax.random.fold_in(KEY, step), x + carry, 0.3)
        return jnp.tanh(y), y

    _, scanned = jax.lax.scan(body, jnp.zeros((3, 4, 2)), (jnp.arange(5), xs))
    carry = jnp.zeros((3, 4, 2))
    looped = []
    for step in range(5):
        y = fn(jax.random.fold_in(KEY, step), xs[step] + carry, 0.3)
        carry = jnp.tanh(y)
        looped.append(y)
    np.testing.assert_allclose(scanned, jnp.stack(looped), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_zero_size_input(name: str) -> None:
    assert TRANSFORMS[name](KEY, jnp.zeros((0, 4, 3)), 0.5).shape == (0, 4, 3)


# --- validation ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_rate_out_of_range(name: str, rate: float) -> None:
    with _raises(ValueError, f"dropoutx.{name}", "rate", repr(rate)):
        TRANSFORMS[name](KEY, _x(), rate)
    with _raises(ValueError, f"dropoutx.{name}", "rate", repr(rate)):
        TRANSFORMS[name](None, _x(), rate, deterministic=True)


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("rate", [jnp.array([0.1, 0.2]), True, "0.5"])
def test_rate_must_be_a_real_scalar(name: str, rate: Any) -> None:
    with _raises(TypeError, f"dropoutx.{name}", "rate"):
        TRANSFORMS[name](KEY, _x(), rate)


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_non_floating_x(name: str, dtype: Any) -> None:
    with _raises(TypeError, f"dropoutx.{name}", "x must be a floating-point array"):
        TRANSFORMS[name](KEY, jnp.ones((3, 2, 2), dtype), 0.5)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_bad_keys(name: str) -> None:
    fn = TRANSFORMS[name]
    with _raises(TypeError, f"dropoutx.{name}", "key is required"):
        fn(None, _x(), 0.5)
    with _raises(TypeError, f"dropoutx.{name}", "shape (3,)", "use jax.vmap"):
        fn(jax.random.split(KEY, 3), _x(), 0.5)
    with _raises(TypeError, f"dropoutx.{name}", "key must be a typed PRNG key"):
        fn(jnp.zeros((2,), jnp.float32), _x(), 0.5)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_deterministic_must_be_a_python_bool(name: str) -> None:
    with _raises(TypeError, f"dropoutx.{name}", "deterministic must be a Python bool"):
        TRANSFORMS[name](KEY, _x(), 0.5, deterministic="yes")


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("rate", [-0.5, 1.5, float("nan")])
def test_traced_rate_out_of_range_gives_nan_and_checkify_reports_it(name: str, rate: float) -> None:
    fn = jax.jit(lambda r: TRANSFORMS[name](KEY, _x(), r))
    assert jnp.isnan(fn(jnp.float32(rate))).all()
    error, _ = checkify.checkify(fn, errors=checkify.user_checks)(jnp.float32(rate))
    assert f"dropoutx.{name}: rate" in (error.get() or "")
    ok, _ = checkify.checkify(fn, errors=checkify.user_checks)(jnp.float32(0.5))
    assert ok.get() is None


def test_alpha_broadcast_dims_out_of_range() -> None:
    with _raises(ValueError, "dropoutx.alpha_dropout", "broadcast_dims", "rank 3"):
        dx.alpha_dropout(KEY, _x(), 0.5, broadcast_dims=(3,))


def test_drop_path_errors() -> None:
    with _raises(ValueError, "dropoutx.drop_path", "rank >= 1", "x[None]"):
        dx.drop_path(KEY, jnp.float32(1.0), 0.5)
    with _raises(TypeError, "dropoutx.drop_path", "scale_by_keep must be a Python bool"):
        dx.drop_path(KEY, _x(), 0.5, scale_by_keep=jnp.bool_(True))


@pytest.mark.parametrize(
    ("options", "error", "fragments"),
    [
        ({"channel_axis": 3}, ValueError, ("channel_axis=3", "rank 3")),
        ({"channel_axis": -4}, ValueError, ("channel_axis=-4",)),
        ({"channel_axis": 1.0}, TypeError, ("channel_axis must be an int",)),
        ({"batch_axis": 5}, ValueError, ("batch_axis=5",)),
        ({"channel_axis": 0}, ValueError, ("same axis", "batch_axis=None")),
        ({"channel_axis": -1, "batch_axis": 2}, ValueError, ("same axis",)),
    ],
)
def test_spatial_dropout_axis_errors(
    options: dict[str, Any], error: type[Exception], fragments: tuple[str, ...]
) -> None:
    with _raises(error, "dropoutx.spatial_dropout", *fragments):
        dx.spatial_dropout(KEY, _x(), 0.5, **options)


# --- Monte-Carlo dropout ----------------------------------------------------------------

W = jax.random.normal(jax.random.key(21), (6, 10), jnp.float32)
X_IN = jax.random.normal(jax.random.key(22), (10,), jnp.float32)


def _linear(key: jax.Array, rate: float = 0.3) -> jax.Array:
    """A linear model with inverted dropout on its input: E[y] = W @ x."""
    return W @ dx.dropout(key, X_IN, rate)


def test_mc_predict_equals_statistics_of_the_split_keys() -> None:
    num_samples = 37
    samples = np.stack(
        [np.asarray(_linear(k), np.float64) for k in jax.random.split(KEY, num_samples)]
    )
    for ddof in [0, 1]:
        mean, variance = dx.mc_predict(_linear, KEY, num_samples, ddof=ddof)
        assert mean.shape == (6,) and mean.dtype == variance.dtype == jnp.float32
        np.testing.assert_allclose(mean, samples.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(variance, samples.var(0, ddof=ddof), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 7, 10, 25, 50, 1000])
def test_mc_predict_chunked_equals_unchunked(chunk_size: int) -> None:
    whole = dx.mc_predict(_linear, KEY, 50)
    chunked = dx.mc_predict(_linear, KEY, 50, chunk_size=chunk_size)
    chex.assert_trees_all_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_mc_predict_mean_and_variance_converge() -> None:
    # Output i is y_i = sum_j c_ij B_j / keep with c_ij = W_ij x_j and B_j ~
    # Bernoulli(keep) independent: a sum of independent terms, whose cumulants
    # add. Its mean is W @ x, the deterministic (inference) pass; its variance
    # sigma^2 = sum_j c_ij^2 rate / keep; its fourth cumulant kappa4 = sum_j
    # (c_ij / keep)^4 keep rate (1 - 6 keep rate), so mu4 = kappa4 + 3 sigma^4.
    # The MC mean has standard error sigma / sqrt(n) and the MC variance
    # sqrt((mu4 - sigma^4) / n) (to O(1/n)); both must lie within 6 of them.
    n, rate = 20_000, 0.3
    keep = 1 - rate
    mean, variance = dx.mc_predict(_linear, KEY, n, chunk_size=4096)
    deterministic = W @ dx.dropout(None, X_IN, rate, deterministic=True)
    c = np.asarray(W, np.float64) * np.asarray(X_IN, np.float64)
    sigma2 = (c**2).sum(1) * rate / keep
    kappa4 = ((c / keep) ** 4).sum(1) * keep * rate * (1 - 6 * keep * rate)
    mu4 = kappa4 + 3 * sigma2**2
    assert (np.abs(np.asarray(mean - deterministic)) <= SIGMAS * np.sqrt(sigma2 / n)).all()
    variance_error = np.sqrt((mu4 - sigma2**2) / n)
    assert (np.abs(np.asarray(variance) - sigma2) <= SIGMAS * variance_error).all()


def test_mc_predict_pytree_outputs_and_dtypes() -> None:
    def fn(key: jax.Array) -> dict[str, Any]:
        y = _linear(key)
        return {
            "y": y,
            "pair": (y.astype(jnp.bfloat16), jnp.sum(y)),
            "positive": y > 0,
            "count": jnp.sum(y > 0),
        }

    mean, variance = dx.mc_predict(fn, KEY, 40, chunk_size=16)
    assert jax.tree.structure(mean) == jax.tree.structure(fn(KEY))
    assert mean["pair"][0].dtype == variance["pair"][0].dtype == jnp.bfloat16
    assert mean["positive"].dtype == variance["count"].dtype == jnp.float32
    assert mean["pair"][1].shape == ()
    samples = [fn(k) for k in jax.random.split(KEY, 40)]
    positive = np.stack([np.asarray(s["positive"], np.float64) for s in samples])
    np.testing.assert_allclose(mean["positive"], positive.mean(0), rtol=1e-6)
    np.testing.assert_allclose(variance["positive"], positive.var(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mean["pair"][1], np.sum(np.asarray(mean["y"])), rtol=1e-4)


def test_mc_predict_is_numerically_stable() -> None:
    # A large offset ruins E[y^2] - E[y]^2 in float32 (1e8 * 6e-8 = 6, more
    # than the variance itself); the two-pass chunks and Chan's merge do not.
    fn = lambda key: 1e4 + _linear(key)  # noqa: E731
    samples = np.asarray(jax.vmap(_linear)(jax.random.split(KEY, 300)), np.float64)
    _, variance = dx.mc_predict(fn, KEY, 300, chunk_size=64)
    np.testing.assert_allclose(variance, samples.var(0), rtol=2e-3)


def test_mc_predict_single_sample_and_raw_keys() -> None:
    mean, variance = dx.mc_predict(_linear, KEY, 1)
    np.testing.assert_array_equal(variance, np.zeros(6, np.float32))
    np.testing.assert_allclose(mean, _linear(jax.random.split(KEY, 1)[0]), rtol=1e-6)
    raw = jax.random.PRNGKey(3)
    seen = []

    def fn(key: jax.Array) -> jax.Array:
        seen.append((key.shape, key.dtype))
        return _linear(key)

    from_raw = dx.mc_predict(fn, raw, 8, chunk_size=3)
    assert all(shape == (2,) and dtype == jnp.uint32 for shape, dtype in seen)
    from_typed = dx.mc_predict(_linear, jax.random.wrap_key_data(raw), 8, chunk_size=3)
    chex.assert_trees_all_close(from_raw, from_typed, rtol=1e-6)


def test_mc_predict_chunks_bound_memory() -> None:
    # The largest intermediate holds one chunk of outputs, not all samples.
    fn = lambda key: dx.dropout(key, jnp.ones((1000,)), 0.5)  # noqa: E731
    chunked = str(jax.make_jaxpr(lambda k: dx.mc_predict(fn, k, 64, chunk_size=8))(KEY))
    whole = str(jax.make_jaxpr(lambda k: dx.mc_predict(fn, k, 64))(KEY))
    assert "f32[64,1000]" in whole
    assert "f32[64,1000]" not in chunked and "f32[8,1000]" in chunked


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_mc_predict_under_jit_vmap_and_grad(chunk_size: int | None) -> None:
    def predict(key: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
        fn = lambda k: jnp.tanh(w @ dx.dropout(k, X_IN, 0.3))  # noqa: E731
        return dx.mc_predict(fn, key, 10, chunk_size=chunk_size)

    eager = predict(KEY, W)
    chex.assert_trees_all_close(jax.jit(predict)(KEY, W), eager, rtol=1e-5, atol=1e-6)
    keys = jax.random.split(KEY, 3)
    batched = jax.vmap(predict, in_axes=(0, None))(keys, W)
    looped = [predict(k, W) for k in keys]
    for i, one in enumerate(looped):
        one_of_batch = jax.tree.map(lambda t, i=i: t[i], batched)
        chex.assert_trees_all_close(one_of_batch, one, rtol=1e-5, atol=1e-6)
    check_grads(lambda w: predict(KEY, w), (W,), order=1, modes=["fwd", "rev"])


@pytest.mark.parametrize(
    ("args", "options", "error", "fragments"),
    [
        (("not callable", KEY, 4), {}, TypeError, ("fn must be a callable",)),
        ((_linear, KEY, 0), {}, ValueError, ("num_samples must be >= 1", "num_samples=0")),
        ((_linear, KEY, 4.0), {}, TypeError, ("num_samples must be a Python int",)),
        ((_linear, KEY, True), {}, TypeError, ("num_samples must be a Python int",)),
        ((_linear, KEY, jnp.int32(4)), {}, TypeError, ("num_samples",)),
        ((_linear, KEY, 4), {"chunk_size": 0}, ValueError, ("chunk_size must be >= 1",)),
        ((_linear, KEY, 4), {"chunk_size": 2.5}, TypeError, ("chunk_size",)),
        ((_linear, KEY, 4), {"ddof": -1}, ValueError, ("ddof must be >= 0",)),
        ((_linear, KEY, 4), {"ddof": 4}, ValueError, ("ddof must be less than num_samples",)),
        ((_linear, jax.random.split(KEY, 2), 4), {}, TypeError, ("use jax.vmap",)),
        ((_linear, None, 4), {}, TypeError, ("key is required",)),
        ((_linear, 0, 4), {}, TypeError, ("key must be a typed PRNG key",)),
        ((lambda k: jnp.ones(2, jnp.complex64), KEY, 4), {}, TypeError, ("real arrays",)),
    ],
)
def test_mc_predict_errors(
    args: tuple[Any, ...],
    options: dict[str, Any],
    error: type[Exception],
    fragments: tuple[str, ...],
) -> None:
    with _raises(error, "dropoutx.mc_predict", *fragments):
        dx.mc_predict(*args, **options)
