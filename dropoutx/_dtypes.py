"""The dtype rules of every transform: output dtype = input dtype, maths in float32.

Scales and noise are computed in float32 (float64 for float64 input) and the
result is rounded once to the input's dtype. A weakly typed input (a Python
float) gives a weakly typed output, as ``jax.numpy`` operations and Flax's
dropout do, so that ``dropout(key, 3.0, rate) + bf16_array`` is bfloat16 at
every rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# jax has no public way to mark an array weakly typed; jax.numpy uses this.
from jax._src.lax.lax import _convert_element_type


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """Scales and noise are computed in float32, or float64 for float64 input."""
    return jnp.dtype(jnp.float64) if dtype == jnp.float64 else jnp.dtype(jnp.float32)


def like_input(y: jax.Array, x: jax.Array) -> jax.Array:
    """``y`` (of ``x``'s dtype), weakly typed when ``x`` is."""
    if jax.typeof(x).weak_type and not jax.typeof(y).weak_type:
        return _convert_element_type(y, y.dtype, weak_type=True)
    return y
