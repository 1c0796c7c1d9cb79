"""Every check of a concrete argument, in one place.

Each check runs on concrete Python values before anything is traced or
computed, and raises an error that names the public function, the argument and
the offending value, and says what to do: ``ValueError`` for a bad value,
``TypeError`` for a bad type. Values that are traced cannot be checked here;
the transforms turn an out-of-range traced value into a NaN output and a
``checkify.debug_check`` instead (see ``_traced``).
"""

from __future__ import annotations

import decimal
import functools
import math
import numbers
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

KeyLike: TypeAlias = jax.Array | np.ndarray
"""A PRNG key: a typed key (``jax.random.key(0)``) or a raw ``uint32`` key
(``jax.random.PRNGKey(0)``, ``uint32[2]`` for threefry)."""


# --- the activations -------------------------------------------------------------


def _describe(value: Any) -> str:
    """``repr(value)``, shortened to one line."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def floating_input(fn_name: str, x: Any, arg_name: str = "x") -> jax.Array:
    """Returns ``x`` as a JAX array, or raises if it is not a floating-point array.

    Accepted: JAX and NumPy arrays and scalars, Python numbers (a Python float
    stays weakly typed), and objects with ``__jax_array__``. Python lists and
    tuples are rejected, as ``jax.numpy`` functions reject them.
    """
    if x is None:
        raise TypeError(
            f"dropoutx.{fn_name}: {arg_name} must be an array, got None. Did the layer that "
            f"computes {arg_name} forget to return its output?"
        )
    is_array = isinstance(x, jax.Array | np.ndarray | np.generic | bool | int | float | complex)
    try:
        if not (is_array or hasattr(x, "__jax_array__")):
            raise TypeError
        x = jnp.asarray(x)
    except TypeError:  # also a NumPy array of strings or objects
        raise TypeError(
            f"dropoutx.{fn_name}: {arg_name} must be a floating-point JAX or NumPy array, got "
            f"{type(x).__name__} {_describe(x)}. Convert it first, e.g. "
            f"jnp.asarray({arg_name}, jnp.float32)."
        ) from None
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"dropoutx.{fn_name}: {arg_name} must be a floating-point array (float16, "
            f"bfloat16, float32 or float64), got dtype {x.dtype}. Cast it first, "
            f"e.g. {arg_name}.astype(jnp.float32)."
        )
    return x


def attention_inputs(
    fn_name: str, query: Any, key: Any, value: Any
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Checks attention's ``query``, ``key`` and ``value``; returns them as arrays.

    Shapes are ``[batch..., length, heads, depth]``: the same rank (3 or more)
    and batch axes, the same depth for ``query`` and ``key``, the same length
    and heads for ``key`` and ``value``, and ``query`` heads a multiple of the
    ``key`` heads (grouped-query attention).

    Raises:
      TypeError: if an input is not a floating-point array.
      ValueError: if the shapes do not fit together.
    """
    arrays = {
        "query": floating_input(fn_name, query, "query"),
        "key": floating_input(fn_name, key, "key"),
        "value": floating_input(fn_name, value, "value"),
    }
    query, key, value = arrays.values()
    problem = None
    if not query.ndim == key.ndim == value.ndim >= 3:
        problem = "query, key and value must have the same rank, at least 3"
    elif not query.shape[:-3] == key.shape[:-3] == value.shape[:-3]:
        problem = "query, key and value must have the same batch axes"
    elif query.shape[-1] != key.shape[-1]:
        problem = "query and key must have the same depth (last axis)"
    elif key.shape[-3:-1] != value.shape[-3:-1]:
        problem = "key and value must have the same length and number of heads"
    elif query.shape[-2] % key.shape[-2] != 0:
        problem = "the query heads must be a multiple of the key heads (grouped-query attention)"
    if problem is not None:
        shapes = ", ".join(f"{name}={array.shape}" for name, array in arrays.items())
        raise ValueError(
            f"dropoutx.{fn_name}: {problem}; shapes are [batch..., length, heads, depth], "
            f"got {shapes}."
        )
    return query, key, value


def attention_einsums(
    fn_name: str, precision: Any, einsum_dot_general: Any, qk_einsum: Any, value_einsum: Any
) -> None:
    """Checks Flax's einsum options: custom einsums come in pairs, without precision.

    Raises:
      ValueError: if only one custom einsum is given, or custom einsums are
        combined with ``precision`` or ``einsum_dot_general``.
    """
    if (qk_einsum is None) != (value_einsum is None):
        raise ValueError(
            f"dropoutx.{fn_name}: qk_attn_weights_einsum and attn_weights_value_einsum "
            f"must be given together, got qk_attn_weights_einsum={qk_einsum!r} and "
            f"attn_weights_value_einsum={value_einsum!r}."
        )
    if qk_einsum is not None and (precision is not None or einsum_dot_general is not None):
        raise ValueError(
            f"dropoutx.{fn_name}: precision and einsum_dot_general cannot be combined "
            f"with custom einsums, got precision={precision!r} and "
            f"einsum_dot_general={einsum_dot_general!r}; pass one or the other."
        )


def no_other_options(fn_name: str, options: dict[str, Any], accepted: Sequence[str]) -> None:
    """Rejects keyword options a function collects but does not know.

    Raises:
      TypeError: naming the unknown options and the accepted ones.
    """
    if options:
        raise TypeError(
            f"dropoutx.{fn_name}: unknown options {sorted(options)}; the accepted "
            f"options are {', '.join(accepted)}."
        )


def batched_input(fn_name: str, x: jax.Array) -> jax.Array:
    """Checks that ``x`` has a batch axis (rank >= 1)."""
    if x.ndim == 0:
        raise ValueError(
            f"dropoutx.{fn_name}: x must have a batch axis (rank >= 1), got a "
            f"scalar of shape {x.shape}; for one example, use x[None]."
        )
    return x


# --- scalars: rate and stddev ---------------------------------------------------------


def concrete_scalar(fn_name: str, arg_name: str, value: Any) -> float | None:
    """Returns a scalar's Python value, or ``None`` when it is traced.

    Python and NumPy real numbers, ``fractions.Fraction`` and
    ``decimal.Decimal`` are converted with ``float``; a JAX or NumPy array must
    be a real (floating or integer) scalar.

    Raises:
      TypeError: if ``value`` is not a real scalar.
    """
    if isinstance(value, bool | np.bool_):
        pass  # a bool is an Integral, but a rate of True is a mistake
    elif isinstance(value, numbers.Real | decimal.Decimal):
        try:
            return float(value)
        except (ValueError, OverflowError):  # a signalling NaN, an int beyond float
            return math.nan
    elif isinstance(value, jax.Array | np.ndarray) and value.ndim == 0:
        if not (
            jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
        ):
            raise TypeError(
                f"dropoutx.{fn_name}: {arg_name} must be a real number, got "
                f"{value!r} of dtype {value.dtype}."
            )
        try:
            return float(value)
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
            return None
    raise TypeError(
        f"dropoutx.{fn_name}: {arg_name} must be a real scalar, got "
        f"{_describe(value)}. For one {arg_name} per example, use jax.vmap."
    )


def rate(fn_name: str, value: Any, *, allow_one: bool = True) -> float | None:
    """Checks a drop probability; returns its Python value or ``None`` if traced.

    Raises:
      TypeError: if ``value`` is not a real scalar.
      ValueError: if a concrete ``value`` is NaN or outside ``[0, 1]`` (or
        ``[0, 1)`` when ``allow_one`` is false).
    """
    concrete = concrete_scalar(fn_name, "rate", value)
    if concrete is None:
        return None
    upper_ok = concrete <= 1.0 if allow_one else concrete < 1.0
    if math.isnan(concrete) or concrete < 0.0 or not upper_ok:
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(
            f"dropoutx.{fn_name}: rate is the probability of dropping a unit "
            f"and must be in {interval}, got rate={concrete!r}. "
            f"(For a keep probability p, pass rate=1 - p.)"
        )
    return concrete


def stddev(fn_name: str, value: Any) -> float | None:
    """Checks a noise scale; returns its Python value or ``None`` if traced.

    Raises:
      TypeError: if ``value`` is not a real scalar.
      ValueError: if a concrete ``value`` is negative, NaN or infinite.
    """
    concrete = concrete_scalar(fn_name, "stddev", value)
    if concrete is None:
        return None
    if not (math.isfinite(concrete) and concrete >= 0.0):
        raise ValueError(
            f"dropoutx.{fn_name}: stddev must be finite and >= 0, got stddev={concrete!r}."
        )
    return concrete


# --- axes and shapes ---------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def broadcast_dims(fn_name: str, dims: Iterable[int], ndim: int) -> tuple[int, ...]:
    """Normalises ``broadcast_dims`` to sorted, unique, non-negative axes.

    Any iterable of ints is accepted and read once (a generator works).

    Raises:
      TypeError: if ``dims`` is not an iterable of integers.
      ValueError: if an entry is outside ``[-ndim, ndim)``.
    """
    entries = tuple(dims) if isinstance(dims, Iterable) and not isinstance(dims, str) else None
    if entries is None or not all(_is_int(d) for d in entries):
        raise TypeError(
            f"dropoutx.{fn_name}: broadcast_dims must be a sequence of ints, "
            f"got broadcast_dims={_describe(dims)}; write e.g. broadcast_dims=(1,), "
            f"or () for no shared axes."
        )
    for d in entries:
        if not -ndim <= d < ndim:
            raise ValueError(
                f"dropoutx.{fn_name}: broadcast_dims entry {d} is out of range "
                f"for an input of rank {ndim}; entries must lie in "
                f"[{-ndim}, {ndim}), got broadcast_dims={entries!r}."
            )
    return tuple(sorted({int(d) % ndim for d in entries}))


def shape(fn_name: str, value: Any) -> tuple[int, ...]:
    """Checks a shape argument and returns it as a tuple of ints.

    Raises:
      TypeError: if ``value`` is not a sequence of integers (a float such as
        2.5 is not truncated).
      ValueError: if an entry is negative.
    """
    entries = tuple(value) if isinstance(value, Iterable) and not isinstance(value, str) else None
    if entries is None or not all(_is_int(d) or _has_index(d) for d in entries):
        raise TypeError(
            f"dropoutx.{fn_name}: shape must be a sequence of ints, got "
            f"shape={_describe(value)}; write e.g. shape=(4, 8)."
        )
    result = tuple(operator.index(d) for d in entries)
    if any(d < 0 for d in result):
        raise ValueError(
            f"dropoutx.{fn_name}: shape entries must be >= 0, got shape={_describe(value)}."
        )
    return result


def _has_index(value: Any) -> bool:
    """An integer scalar other than a bool, such as a concrete ``jnp.int32``."""
    if isinstance(value, bool | np.bool_) or not hasattr(value, "__index__"):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def axis(fn_name: str, arg_name: str, value: Any, ndim: int) -> int:
    """Normalises an axis of an array of rank ``ndim`` to ``[0, ndim)``, or raises."""
    if not _is_int(value):
        raise TypeError(f"dropoutx.{fn_name}: {arg_name} must be an int, got {arg_name}={value!r}.")
    if not -ndim <= value < ndim:
        raise ValueError(
            f"dropoutx.{fn_name}: {arg_name}={value} is out of range for an "
            f"input of rank {ndim}; it must lie in [{-ndim}, {ndim})."
        )
    return int(value) % ndim


def channel_and_batch_axes(
    fn_name: str, channel_axis: Any, batch_axis: Any, ndim: int
) -> tuple[int, int | None]:
    """Normalises a channel axis and an optional batch axis, which must differ."""
    channel = axis(fn_name, "channel_axis", channel_axis, ndim)
    batch = None if batch_axis is None else axis(fn_name, "batch_axis", batch_axis, ndim)
    if channel == batch:
        raise ValueError(
            f"dropoutx.{fn_name}: channel_axis={channel_axis} and "
            f"batch_axis={batch_axis} name the same axis of an input of rank "
            f"{ndim}; for an unbatched input pass batch_axis=None."
        )
    return channel, batch


def feature_map_spatial_axes(fn_name: str, x: jax.Array, channel_axis: Any) -> tuple[int, ...]:
    """The spatial axes of a batch of feature maps: every axis but 0 and the channels.

    Raises:
      ValueError: if ``x`` has no spatial axis (rank < 3) or ``channel_axis``
        is out of range or names the batch axis 0.
      TypeError: if ``channel_axis`` is not an int.
    """
    if x.ndim < 3:
        raise ValueError(
            f"dropoutx.{fn_name}: x must have a batch axis, a channel axis and "
            f"at least one spatial axis (rank >= 3), got shape {x.shape}; for "
            f"one example, use x[None]."
        )
    channel = axis(fn_name, "channel_axis", channel_axis, x.ndim)
    if channel == 0:
        raise ValueError(
            f"dropoutx.{fn_name}: channel_axis={channel_axis} names the batch axis "
            f"(axis 0); use -1 for channels-last or 1 for channels-first."
        )
    return tuple(a for a in range(1, x.ndim) if a != channel)


def block_size(
    fn_name: str, value: Any, shape: tuple[int, ...], spatial_sizes: tuple[int, ...]
) -> int:
    """Checks a block size: a Python int from 1 to the smallest spatial size.

    Raises:
      TypeError: if ``value`` is not a Python int.
      ValueError: if a block of ``value`` units would not fit inside the map.
    """
    if not _is_int(value):
        raise TypeError(
            f"dropoutx.{fn_name}: block_size must be a Python int, got "
            f"block_size={value!r}. It sets array shapes, so it cannot be traced."
        )
    if not 1 <= value <= min(spatial_sizes):
        raise ValueError(
            f"dropoutx.{fn_name}: block_size must be >= 1 and at most every "
            f"spatial size {spatial_sizes} of x of shape {shape}, so that a block "
            f"fits inside the map; got block_size={value}."
        )
    return int(value)


def hidden_states(fn_name: str, h_prev: Any, h_new: Any) -> tuple[jax.Array, jax.Array]:
    """Checks a recurrent state before and after a step: floating, same shape and dtype.

    Raises:
      TypeError: if either is not a floating-point array, or their dtypes differ.
      ValueError: if their shapes differ.
    """
    h_prev = floating_input(fn_name, h_prev, "h_prev")
    h_new = floating_input(fn_name, h_new, "h_new")
    if h_prev.shape != h_new.shape:
        raise ValueError(
            f"dropoutx.{fn_name}: h_prev and h_new must have the same shape, got "
            f"h_prev.shape={h_prev.shape} and h_new.shape={h_new.shape}."
        )
    if h_prev.dtype != h_new.dtype:
        raise TypeError(
            f"dropoutx.{fn_name}: h_prev and h_new must have the same dtype, got "
            f"{h_prev.dtype} and {h_new.dtype}; cast one, e.g. "
            f"h_prev.astype(h_new.dtype)."
        )
    return h_prev, h_new


def recurrent_cell(owner: str, cell: Any, *, framework: str, module_type: type, fix: str) -> None:
    """Checks that ``cell`` is a recurrent cell instance of ``framework`` (Linen or NNX).

    ``module_type`` is the framework's module class; ``fix`` shows how to
    build a cell. A cell of the other framework gets a hint naming the module
    to use instead.

    Raises:
      TypeError: if ``cell`` is a class, not a module of ``framework``, or a
        module without ``initialize_carry`` and ``num_feature_axes``.
    """
    if isinstance(cell, type):
        raise TypeError(
            f"dropoutx.{owner}: cell must be a Flax {framework} recurrent cell instance, "
            f"got the class {cell.__name__}; construct it first, {fix}."
        )
    if not isinstance(cell, module_type):
        other, article = ("nnx", "an NNX") if framework == "Linen" else ("linen", "a Linen")
        hint = (
            f" It is {article} module: use dropoutx.{other} instead."
            if type(cell).__module__.split(".")[:2] == ["flax", other]
            else ""
        )
        raise TypeError(
            f"dropoutx.{owner}: cell must be a Flax {framework} recurrent cell ({fix}), "
            f"got {type(cell).__name__} {cell!r:.80}.{hint}"
        )
    if not callable(getattr(type(cell), "initialize_carry", None)) or not hasattr(
        type(cell), "num_feature_axes"
    ):
        raise TypeError(
            f"dropoutx.{owner}: cell must be a Flax {framework} recurrent cell, a module "
            f"with initialize_carry and num_feature_axes such as RNNCellBase subclasses "
            f"({fix}); got {type(cell).__name__}, which lacks them."
        )


def axis_names(fn_name: str, value: Any) -> tuple[str, ...]:
    """Checks a mesh axis name or a non-empty sequence of them."""
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"dropoutx.{fn_name}: axis_name must be a mesh axis name or a sequence "
            f"of them, got axis_name={value!r}."
        )
    if not names:
        raise ValueError(
            f"dropoutx.{fn_name}: axis_name must name at least one mesh axis, "
            f"got axis_name={value!r}."
        )
    return tuple(names)


# --- static options -------------------------------------------------------------------


def static_bool(fn_name: str, arg_name: str, value: Any) -> bool:
    """Checks a flag that selects the code path, so must be a Python bool."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(
            f"dropoutx.{fn_name}: {arg_name} must be a Python bool, got "
            f"{arg_name}={value!r}. It selects the code path, so it cannot be "
            f"traced; pass it as a static argument to jax.jit."
        )
    return bool(value)


def count(fn_name: str, arg_name: str, value: Any, *, minimum: int) -> int:
    """Checks a static integer count, ``>= minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool | np.bool_):
        raise TypeError(
            f"dropoutx.{fn_name}: {arg_name} must be a Python int, got "
            f"{arg_name}={value!r}. It sets array shapes, so it cannot be traced."
        )
    if value < minimum:
        raise ValueError(
            f"dropoutx.{fn_name}: {arg_name} must be >= {minimum}, got {arg_name}={value}."
        )
    return int(value)


def ddof(fn_name: str, value: Any, num_samples: int) -> int:
    """Checks the delta degrees of freedom of a variance over ``num_samples``."""
    value = count(fn_name, "ddof", value, minimum=0)
    if value >= num_samples:
        raise ValueError(
            f"dropoutx.{fn_name}: ddof must be less than num_samples, got "
            f"ddof={value} with {num_samples=}; the variance divides by num_samples - ddof."
        )
    return value


def function(fn_name: str, arg_name: str, value: Any, example: str) -> Callable[..., Any]:
    """Checks that ``value`` is callable; ``example`` says what it should be."""
    if not callable(value):
        raise TypeError(
            f"dropoutx.{fn_name}: {arg_name} must be a callable {example}, got {value!r}."
        )
    return value


def schedule(fn_name: str, value: Any) -> Callable[[Any], Any]:
    """Checks that ``value`` is a schedule (a callable ``step -> rate``)."""
    return function(
        fn_name, "schedule", value, "step -> rate, such as optax.linear_schedule(0.5, 0.0, 10_000)"
    )


def real_outputs(fn_name: str, shapes: Any) -> None:
    """Checks that every leaf of ``fn``'s abstract output is a real array."""
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


# --- keys ---------------------------------------------------------------------------


@functools.cache
def _raw_key_shape(impl: str) -> tuple[int, ...]:
    """Shape of a raw key of the named implementation (``(2,)`` for threefry)."""
    return jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape


def key(fn_name: str, value: Any, *, required: str = "") -> jax.Array:
    """Returns ``value`` as a typed key array of shape ``()``, or raises.

    Accepts typed keys (``jax.random.key``) and raw ``uint32`` keys
    (``jax.random.PRNGKey``), which are read with the default implementation.
    ``required`` completes "a PRNG key is required" in the error for ``None``.

    Raises:
      TypeError: if ``value`` is missing, not a key, or a batch of keys.
    """
    if value is None:
        raise TypeError(
            f"dropoutx.{fn_name}: a PRNG key is required{required}; pass e.g. jax.random.key(0)."
        )
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        if value.shape:
            raise TypeError(
                f"dropoutx.{fn_name}: accepts a single key, but was given a key "
                f"array of shape {value.shape}; use jax.vmap to map over a batch "
                f"of keys."
            )
        return value
    raw_shape = _raw_key_shape(jax.config.jax_default_prng_impl)  # type: ignore[attr-defined]
    dtype = getattr(value, "dtype", None)
    if dtype == np.uint32 and value.shape[-len(raw_shape) :] == raw_shape:
        if value.shape != raw_shape:
            raise TypeError(
                f"dropoutx.{fn_name}: accepts a single key, but was given a raw "
                f"key array of shape {value.shape}; use jax.vmap to map over a "
                f"batch of keys."
            )
        return jax.random.wrap_key_data(value)
    description = f"dtype {dtype}, shape {getattr(value, 'shape', None)}"
    if dtype is None:
        description = _describe(value)
    raise TypeError(
        f"dropoutx.{fn_name}: key must be a typed PRNG key (jax.random.key(0)) "
        f"or a raw uint32{list(raw_shape)} key (jax.random.PRNGKey(0)), got "
        f"{description}."
    )


# --- the arguments every transform shares --------------------------------------------


class Parameter(NamedTuple):
    """How a transform's scalar parameter is checked, and where it draws nothing."""

    name: str
    check: Callable[[str, Any], float | None]
    draws_nothing_at: tuple[float, ...]
    """Concrete values at which the transform draws no random bits."""


def _gaussian_rate(fn_name: str, value: Any) -> float | None:
    return rate(fn_name, value, allow_one=False)


RATE = Parameter("rate", rate, (0.0, 1.0))
GAUSSIAN_RATE = Parameter("rate", _gaussian_rate, (0.0,))  # rate 1 is invalid
STDDEV = Parameter("stddev", stddev, (0.0,))


class Arguments(NamedTuple):
    """The checked arguments of a transform ``fn(key, x, param, *, options)``."""

    key: jax.Array | None
    """A typed key; ``None`` only when no random bits are drawn."""
    x: jax.Array
    param: float | None
    """The Python value of the rate or stddev; ``None`` when it is traced."""
    broadcast_dims: tuple[int, ...]
    deterministic: bool


def arguments(
    fn_name: str,
    key_value: Any,
    x: Any,
    param: Any,
    deterministic: Any,
    dims: Iterable[int] = (),
    *,
    kind: Parameter = RATE,
) -> Arguments:
    """Checks, in order, ``x``, the rate or stddev, ``broadcast_dims``,
    ``deterministic`` and the key.

    The key may be ``None`` when ``deterministic`` is true or the parameter is
    a concrete value in ``kind.draws_nothing_at`` (a rate of 0 or 1, a stddev
    of 0), where the transform draws no random bits; a key that is given is
    checked unless ``deterministic`` is true.
    """
    x = floating_input(fn_name, x)
    concrete = kind.check(fn_name, param)
    normalised_dims = broadcast_dims(fn_name, dims, x.ndim)
    deterministic = static_bool(fn_name, "deterministic", deterministic)
    checked_key = None
    if not deterministic and (key_value is not None or concrete not in kind.draws_nothing_at):
        no_draw = " or ".join(f"{value:g}" for value in kind.draws_nothing_at)
        required = (
            f" when deterministic=False (it may be None only when deterministic=True "
            f"or the {kind.name} is a concrete {no_draw})"
        )
        checked_key = key(fn_name, key_value, required=required)
    return Arguments(checked_key, x, concrete, normalised_dims, deterministic)
