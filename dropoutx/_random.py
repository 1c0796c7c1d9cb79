"""Random bits that XLA can fuse with the masking that consumes them.

``jax.random.bits`` on a threefry key computes, for element ``i`` of the
row-major flattened shape, the Threefry-2x32 hash (Salmon et al. 2011,
"Parallel random numbers: as easy as 1, 2, 3") of the 64-bit counter ``i``
under the key, and XORs the two output words. On CPU it does so through a
primitive whose lowering writes intermediate buffers, so a dropout layer
touches several times the memory of a copy.

Here the same hash is written with plain ``jnp`` integer operations over an
iota counter. The result is bit-identical to ``jax.random.bits(key, shape)``
(with ``jax_threefry_partitionable``, the default), but every step is
elementwise, so XLA fuses generation, comparison and selection into one pass,
and under SPMD each shard computes its own counters without communication.
Keys of other implementations (rbg, unsafe_rbg, philox, threefry4x32) use
``jax.random.bits``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

# The sharding of generated bits: ``jax.typeof(x).sharding``, a spec, or None.
Sharding = NamedSharding | PartitionSpec | None

# Rotation distances of Threefry-2x32, alternating between the two groups of
# four rounds, and the key-schedule parity constant (Salmon et al. 2011).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = 0x1BD11BDA
_THREEFRY = "threefry2x32"


@functools.cache
def _raw_key_shape(impl: str) -> tuple[int, ...]:
    """Shape of a raw key of the named implementation (``(2,)`` for threefry)."""
    return jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape


def check_key(fn_name: str, key: Any) -> jax.Array:
    """Returns ``key`` as a typed key array of shape ``()``, or raises.

    Accepts typed keys (``jax.random.key``) and raw ``uint32`` keys
    (``jax.random.PRNGKey``), which are read with the default implementation.

    Raises:
      TypeError: if ``key`` is missing, not a key, or a batch of keys.
    """
    if key is None:
        raise TypeError(
            f"dropoutx.{fn_name}: a PRNG key is required when "
            f"deterministic=False; pass e.g. jax.random.key(0)."
        )
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape:
            raise TypeError(
                f"dropoutx.{fn_name}: accepts a single key, but was given a key "
                f"array of shape {key.shape}; use jax.vmap to map over a batch "
                f"of keys."
            )
        return key
    raw_shape = _raw_key_shape(jax.config.jax_default_prng_impl)  # type: ignore[attr-defined]
    dtype = getattr(key, "dtype", None)
    if dtype == np.uint32 and key.shape[-len(raw_shape) :] == raw_shape:
        if key.shape != raw_shape:
            raise TypeError(
                f"dropoutx.{fn_name}: accepts a single key, but was given a raw "
                f"key array of shape {key.shape}; use jax.vmap to map over a "
                f"batch of keys."
            )
        return jax.random.wrap_key_data(key)
    description = f"dtype {dtype}, shape {getattr(key, 'shape', None)}"
    if dtype is None:
        description = f"{key!r}"
    raise TypeError(
        f"dropoutx.{fn_name}: key must be a typed PRNG key (jax.random.key(0)) "
        f"or a raw uint32{list(raw_shape)} key (jax.random.PRNGKey(0)), got "
        f"{description}."
    )


def _rotate_left(value: jax.Array, distance: int) -> jax.Array:
    return (value << np.uint32(distance)) | (value >> np.uint32(32 - distance))


def _threefry2x32(
    key_words: tuple[jax.Array, jax.Array], injected: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """The 20-round Threefry-2x32 block function, elementwise over counters.

    ``injected`` is the counter after the first key injection, ``(counter[0] +
    key[0], counter[1] + key[1])``; the caller adds the key so that it can
    build the counter around it (see :func:`_keyed_counter`).
    """
    schedule = (key_words[0], key_words[1], key_words[0] ^ key_words[1] ^ np.uint32(_KEY_PARITY))
    x0, x1 = injected
    for injection in range(1, 6):
        for distance in _ROTATIONS[(injection - 1) % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, distance) ^ x0
        x0 = x0 + schedule[injection % 3]
        x1 = x1 + schedule[(injection + 1) % 3] + np.uint32(injection)
    return x0, x1


def replicated_along(sharding: Sharding, axes: tuple[int, ...]) -> Sharding:
    """``sharding`` with the array axes ``axes`` unsharded (e.g. size-1 broadcast axes).

    A mask shared along a sharded axis has size 1 there, so it cannot be split
    over that mesh axis; each device holds the one value and broadcasts it to
    its shard locally.
    """
    if sharding is None or not axes:
        return sharding
    spec = sharding.spec if isinstance(sharding, NamedSharding) else sharding
    spec = PartitionSpec(*(None if axis in axes else entry for axis, entry in enumerate(spec)))
    return sharding.update(spec=spec) if isinstance(sharding, NamedSharding) else spec


def _keyed_counter(
    key_word: jax.Array, shape: tuple[int, ...], out_sharding: Sharding = None
) -> jax.Array:
    """``key_word`` plus the row-major flat index of every element, as uint32.

    The flat index is the sum over axes of ``iota * stride``. Each term is a
    small array (the axis's length, size 1 elsewhere) added to ``key_word`` in
    turn, so every full-size intermediate depends on the key: none is a
    constant that XLA could hoist out of a scanned loop and keep alive as an
    activation-sized buffer. Addition wraps mod 2**32, so the order of the terms
    does not change the result (the flat index itself is exact for size <
    2**32).
    """
    total = key_word
    for axis, length in enumerate(shape):
        term_shape = tuple(length if other == axis else 1 for other in range(len(shape)))
        others = tuple(other for other in range(len(shape)) if other != axis)
        iota = jax.lax.broadcasted_iota(
            jnp.uint32, term_shape, axis, out_sharding=replicated_along(out_sharding, others)
        )
        total = total + iota * np.uint32(math.prod(shape[axis + 1 :]))
    return jnp.broadcast_to(total, shape, out_sharding=out_sharding)


def random_bits(key: jax.Array, shape: tuple[int, ...], out_sharding: Sharding = None) -> jax.Array:
    """``uint32`` bits equal to ``jax.random.bits(key, shape)``, fusibly.

    ``out_sharding`` (e.g. ``jax.typeof(x).sharding``) places the counters, so
    that on a mesh with explicit axes each device hashes only its own shard;
    with automatic axes the partitioner does the same by propagation. The bits
    do not depend on it.
    """
    if str(jax.random.key_impl(key)) != _THREEFRY or math.prod(shape) >= 2**32:
        return jax.random.bits(key, shape, jnp.uint32, out_sharding=out_sharding)
    key_data = jax.random.key_data(key)
    key_words = (key_data[0], key_data[1])
    # The counter's high word is 0 for every element (size < 2**32), so after
    # the first key injection it is the scalar key word itself.
    injected = (key_words[0], _keyed_counter(key_words[1], shape, out_sharding))
    word0, word1 = _threefry2x32(key_words, injected)
    return word0 ^ word1


def drop_threshold(rate: jax.Array) -> jax.Array:
    """The ``uint32`` threshold below which bits mean "drop", for rate < 1.

    ``P(bits < threshold) = floor(rate * 2**32) / 2**32``: the drop probability
    equals the float32 rate to within 2**-32.
    """
    rate = rate.astype(jnp.float32)
    scaled = jnp.floor(jnp.where(rate < 1, rate, 0) * np.float32(2**32))
    return jnp.clip(scaled, 0, None).astype(jnp.uint32)


def keep_mask(
    key: jax.Array,
    shape: tuple[int, ...],
    rate: jax.Array,
    broadcast_dims: tuple[int, ...],
    out_sharding: Sharding = None,
) -> jax.Array:
    """Boolean mask of ``shape``, ``True`` with probability ``1 - rate``.

    One value is drawn per position of the shape with ``broadcast_dims`` set to
    1, then broadcast. A rate of 1, or one outside ``[0, 1)`` (or NaN), drops
    everything. ``out_sharding`` is the sharding of the mask (see
    :func:`random_bits`); it may shard a broadcast axis.
    """
    mask_shape = tuple(1 if axis in broadcast_dims else n for axis, n in enumerate(shape))
    bits = random_bits(key, mask_shape, replicated_along(out_sharding, broadcast_dims))
    rate = jnp.asarray(rate, jnp.float32)
    kept = (bits >= drop_threshold(rate)) & (rate >= 0) & (rate < 1)
    return jnp.broadcast_to(kept, shape, out_sharding=out_sharding)


def standard_normal(
    key: jax.Array, shape: tuple[int, ...], out_sharding: Sharding = None
) -> jax.Array:
    """float32 N(0, 1) samples equal to ``jax.random.normal(key, shape)``.

    The inverse-CDF method: 23 random mantissa bits give a uniform number on
    ``(-1, 1)``, and ``sqrt(2) * erfinv(u)`` maps it to a standard normal.
    ``out_sharding`` places the samples, as in :func:`random_bits`.
    """
    bits = random_bits(key, shape, out_sharding)
    one_bits = np.float32(1.0).view(np.uint32)
    unit = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | one_bits, jnp.float32) - 1
    low = np.nextafter(np.float32(-1), np.float32(0))
    uniform = jnp.maximum(low, unit * (np.float32(1) - low) + low)
    return np.float32(np.sqrt(2)) * jax.lax.erf_inv(uniform)
