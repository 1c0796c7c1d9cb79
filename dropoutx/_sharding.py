"""Keys for dropout inside ``jax.shard_map``.

On arrays sharded by ``jax.jit`` (``NamedSharding``, automatic or explicit mesh
axes) the transforms need nothing: each device hashes only the counters of its
own shard, and the result equals the unsharded one. Inside ``jax.shard_map``,
however, each device sees only its local block, so the same key gives every
block the same mask. :func:`shard_key` derives one key per shard instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from dropoutx import _validate
from dropoutx._validate import KeyLike


def shard_key(key: KeyLike, axis_name: str | Sequence[str]) -> jax.Array:
    """A key of its own for each shard along the named mesh axes.

    ``shard_key(key, axes) = jax.random.fold_in(key, jax.lax.axis_index(axes))``,
    where ``axis_index`` of a tuple of axes is the row-major index of the shard
    over those axes. Call it inside ``jax.shard_map`` (or a named ``jax.vmap``)
    and pass the result to any dropoutx transform: the blocks then get
    independent masks, with no communication between devices.

    Name exactly the axes the array is split over. Along an axis it is
    replicated over (e.g. the ``'model'`` axis for data-parallel activations)
    the copies must stay identical, so that axis is left out.

    The masks differ from those of the same key on the unsharded array, since
    each block draws its own counters from 0; outside ``shard_map`` do not use
    this helper, as the transforms already shard their masks.

    Args:
      key: a typed key (``jax.random.key``) or a raw ``uint32[2]`` key
        (``jax.random.PRNGKey``); the result is of the same kind.
      axis_name: a mesh axis name, or a sequence of them.

    Returns:
      A key of the same kind as ``key``, different on every shard.

    Raises:
      TypeError: if ``key`` is not a single key, or ``axis_name`` is not a
        string or a sequence of strings.
      ValueError: if ``axis_name`` is an empty sequence.
      NameError: (from ``jax.lax.axis_index``) if an axis is not bound, i.e.
        the call is not inside a ``shard_map`` over that axis.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> import dropoutx as dx
      >>> mesh = jax.make_mesh((jax.device_count(),), ("data",))
      >>> x = jax.device_put(jnp.ones((8, 4)), NamedSharding(mesh, P("data")))
      >>> def local_dropout(key, x):
      ...     return dx.inverted_dropout(dx.shard_key(key, "data"), x, 0.5)
      >>> f = jax.shard_map(
      ...     local_dropout, mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data")
      ... )
      >>> y = jax.jit(f)(jax.random.key(0), x)
      >>> y.shape, y.dtype
      ((8, 4), dtype('float32'))
      >>> sorted(set(y.ravel().tolist()))  # dropped units are 0, kept ones 1 / 0.5
      [0.0, 2.0]
    """
    _validate.key("shard_key", key)
    names = _validate.axis_names("shard_key", axis_name)
    return jax.random.fold_in(key, jax.lax.axis_index(names))
