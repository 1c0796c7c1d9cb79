"""Flax Linen modules for the dropoutx transforms.

``from dropoutx import linen as dxl``. Every module is a subclass of one private
base, ``_Stochastic``, which holds the call: it merges the ``deterministic``
flag of the field and the call (with :func:`flax.linen.merge_param`'s rules, as
:class:`flax.linen.Dropout` does), takes the PRNG key (``rng`` if given, else
``self.make_rng(self.rng_collection)``) and hands both to the module's
transform, one public function of :mod:`dropoutx`, which holds the maths and
validates the arguments. Each module declares its own fields, so its signature
and positional order are its own.

:class:`Dropout` is a drop-in replacement for :class:`flax.linen.Dropout`: the
same fields, the same call, no parameters or variables of its own, and the
same output at inference. While training it draws a different (but equally
distributed) mask from the same key, keeps bf16 and fp16 unbiased, and accepts
a traced ``rate``.

The rest of the family: :class:`AlphaDropout` (for SELU networks),
:class:`DropPath` (stochastic depth, whole examples) and
:class:`DropConnectDense` (a :class:`flax.linen.Dense` whose kernel, not its
output, is dropped out while training).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import errors
from flax.linen.dtypes import promote_dtype
from jax.typing import ArrayLike

import dropoutx as dx
from dropoutx import _validate

__all__ = (
    "AlphaDropout",
    "AnnealedDropout",
    "DropConnectDense",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "GaussianNoise",
    "VanillaDropout",
)


def _concrete(value: Any) -> float | None:
    """``value`` as a Python float if it is a concrete scalar; ``None`` if it is traced."""
    concrete = not isinstance(value, jax.core.Tracer) and jnp.ndim(value) == 0
    return float(value) if concrete else None


class _Stochastic(nn.Module):
    """The base of every module here: resolves the flag and the key, calls the transform.

    Like Flax's ``_Conv``, the base holds the call and each public module
    supplies what differs. A subclass declares its own dataclass fields, so
    its signature and positional order are its own; they end with
    ``deterministic`` and ``rng_collection``, which the base reads. It names
    the public function of :mod:`dropoutx` it applies in ``_function``, or,
    if that function takes other arguments than ``rate`` and
    ``broadcast_dims``, overrides :meth:`_transform`; it overrides
    :meth:`_check` if its fields need other checks than ``rate`` in ``[0,
    1]``. Modules hold no maths. The rate is checked when the module is built
    and then once per call, by the function.
    """

    _function: ClassVar[Callable[..., jax.Array]]

    def __post_init__(self) -> None:
        self._check()
        super().__post_init__()

    @nn.nowrap
    def _check(self) -> None:
        """Validates the fields when the module is built: by default ``rate``."""
        _validate.rate(f"linen.{type(self).__name__}", self.rate)

    def _transform(self, key: Any, inputs: ArrayLike, deterministic: bool) -> jax.Array:
        """Calls the module's public function with the resolved key and flag."""
        return self._function(
            key, inputs, self.rate, deterministic=deterministic, broadcast_dims=self.broadcast_dims
        )

    def _needs_random_bits(self) -> bool:
        """False at a concrete rate of 0 or 1, where the transform needs no key.

        True while the rate is traced. Reads ``self.rate``; modules without a
        rate override it.
        """
        return _concrete(self.rate) not in (0.0, 1.0)

    def _owner(self) -> str:
        """``dropoutx.linen.Dropout`` plus the module's name, for error messages."""
        name = f" (module {self.name!r})" if self.name is not None else ""
        return f"dropoutx.linen.{type(self).__name__}{name}"

    def _is_deterministic(self, call_time: bool | None) -> bool:
        """:func:`flax.linen.merge_param` for ``deterministic``, with errors that name the fix.

        Each error starts with Flax's own sentence, so code that matches
        :func:`flax.linen.merge_param`'s message still matches.
        """
        field = self.deterministic
        if field is None and call_time is None:
            raise ValueError(
                f'Parameter "deterministic" must be passed to the constructor or at call '
                f"time. {self._owner()}: it was passed to neither. Set it once, e.g. "
                f"{type(self).__name__}(..., deterministic=not train) or "
                f"module(x, deterministic=not train)."
            )
        if field is not None and call_time is not None:
            raise ValueError(
                f'Parameter "deterministic" was passed to the constructor and at call '
                f"time. Should be passed just once. {self._owner()}: got "
                f"deterministic={field!r} in the constructor and deterministic="
                f"{call_time!r} at call time."
            )
        value = field if call_time is None else call_time
        if isinstance(value, jax.core.Tracer):
            raise TypeError(
                f"{self._owner()}: deterministic must be a Python bool, but it was "
                f"traced (e.g. passed positionally through nn.remat, nn.jit or "
                f"jax.jit). It selects the code path, so it must be static: set it "
                f"as a module field, or mark it static (static_argnums for nn.remat "
                f"/ jax.jit, static_argnames for jax.jit)."
            )
        return bool(value)

    def _draw_key(self, rng: Any) -> Any:
        """``rng`` if given, else ``make_rng(rng_collection)`` with an error that names the fix."""
        if rng is not None:
            return rng
        try:
            return self.make_rng(self.rng_collection)
        except errors.InvalidRngError as error:
            collection = self.rng_collection
            raise errors.InvalidRngError(  # type: ignore[no-untyped-call]
                f"{self._owner()}: deterministic=False needs a PRNG key from the "
                f"{collection!r} collection, and none was provided. Pass "
                f"rngs={{{collection!r}: jax.random.key(0)}} to Module.apply() "
                f"(or init()), pass rng=key at call time, or use deterministic=True "
                f"for inference."
            ) from error

    def _resolve(self, deterministic: bool | None, rng: Any) -> tuple[Any, bool]:
        """The key (or ``None``) and the ``deterministic`` flag to pass to the transform.

        Like :class:`flax.linen.Dropout`, a module draws no key at inference,
        nor at a concrete rate of 0 or 1, where the transform needs no random
        bits (it returns its rate-0 or rate-1 result for ``key=None``), so such
        a model can be applied without a ``'dropout'`` rng. A traced rate
        always needs a key while training.
        """
        deterministic = self._is_deterministic(deterministic)
        if deterministic or not self._needs_random_bits():
            return None, deterministic
        return self._draw_key(rng), False

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: Any = None
    ) -> jax.Array:
        """Applies the module's transform to ``inputs`` (see the class docstring).

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: if true, apply the inference rule (the identity,
            except for :class:`VanillaDropout`); exactly one of the field and
            this argument must be set.
          rng: a key to use instead of ``make_rng(rng_collection)``.

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        key, deterministic = self._resolve(deterministic, rng)
        return self._transform(key, inputs, deterministic)


class Dropout(_Stochastic):
    """Inverted dropout, a drop-in replacement for :class:`flax.linen.Dropout`.

    While training, ``y = where(mask, x / (1 - rate), 0)`` with ``mask ~
    Bernoulli(1 - rate)`` shared along ``broadcast_dims``; at inference ``y =
    x``. Calls :func:`dropoutx.inverted_dropout`.

    ``deterministic`` is merged from the field and the call as
    :func:`flax.linen.merge_param` does (exactly one must be set). The key is
    ``rng`` if given, else ``self.make_rng(rng_collection)``: pass
    ``rngs={'dropout': key}`` to ``apply``.

    Attributes:
      rate: the probability of dropping a unit (not the keep rate), in ``[0,
        1]``; a Python number or a (possibly traced) JAX scalar.
      broadcast_dims: axes that share one mask value (e.g. the spatial axes,
        for channel dropout).
      deterministic: if true, return the input unchanged; may instead be given
        at call time.
      rng_collection: the rng collection the key is drawn from.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from dropoutx import linen as dxl
      >>> class MLP(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, train: bool):
      ...         x = nn.Dense(16)(x)
      ...         return dxl.Dropout(0.5, deterministic=not train)(x)
      >>> x = jnp.ones((4, 3))
      >>> variables = MLP().init(jax.random.key(0), x, train=False)
      >>> y = MLP().apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
      >>> y.shape, y.dtype
      ((4, 16), dtype('float32'))
      >>> h = MLP().apply(variables, x, train=False)  # inference: no dropout
      >>> bool(jnp.all((y == 0) | jnp.isclose(y, 2 * h)))  # kept units scaled by 1 / 0.5
      True
    """

    rate: ArrayLike
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    _function = staticmethod(dx.inverted_dropout)


class VanillaDropout(_Stochastic):
    """Vanilla dropout: no rescaling while training, ``x * (1 - rate)`` at inference.

    While training, ``y = where(mask, x, 0)``; at inference ``y = x * (1 -
    rate)``, the weight-scaling rule of Srivastava et al. (2014). Calls
    :func:`dropoutx.vanilla_dropout`. Fields and call as :class:`Dropout`.

    Attributes:
      rate: the probability of dropping a unit, in ``[0, 1]``.
      broadcast_dims: axes that share one mask value.
      deterministic: if true, scale by ``1 - rate`` instead of masking; may
        instead be given at call time.
      rng_collection: as in :class:`Dropout`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from dropoutx import linen as dxl
      >>> x = jnp.full((2, 8), 4.0, jnp.float32)
      >>> layer = dxl.VanillaDropout(0.25)
      >>> layer.apply({}, x, deterministic=True)[0, :2]  # weight scaling at inference
      Array([3., 3.], dtype=float32)
      >>> y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> sorted(set(y.ravel().tolist()))  # no rescaling while training
      [0.0, 4.0]
    """

    rate: ArrayLike
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    _function = staticmethod(dx.vanilla_dropout)


class GaussianDropout(_Stochastic):
    """Gaussian dropout: multiply by ``N(1, rate / (1 - rate))`` noise while training.

    While training, ``y = x * (1 + sqrt(rate / (1 - rate)) * eps)`` with
    ``eps ~ N(0, 1)`` shared along ``broadcast_dims``; at inference ``y = x``.
    Calls :func:`dropoutx.gaussian_dropout`. Fields and call as
    :class:`Dropout`.

    Attributes:
      rate: the drop rate whose Bernoulli variance the noise matches, in ``[0,
        1)``.
      broadcast_dims: axes that share one noise value.
      deterministic, rng_collection: as in :class:`Dropout`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from dropoutx import linen as dxl
      >>> x = jnp.ones((1000, 100), jnp.bfloat16)
      >>> layer = dxl.GaussianDropout(0.5, deterministic=False)
      >>> y = layer.apply({}, x, rngs={"dropout": jax.random.key(0)})
      >>> y.shape, y.dtype
      ((1000, 100), dtype(bfloat16))
      >>> bool(abs(y.astype(jnp.float32).mean() - 1) < 0.02)  # E[y] = x
      True
    """

    rate: ArrayLike
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    _function = staticmethod(dx.gaussian_dropout)

    @nn.nowrap
    def _check(self) -> None:
        _validate.rate(f"linen.{type(self).__name__}", self.rate, allow_one=False)


class GaussianNoise(_Stochastic):
    """Additive Gaussian noise: ``x + stddev * eps`` while training, ``x`` at inference.

    Calls :func:`dropoutx.gaussian_noise`. Fields and call as :class:`Dropout`,
    with ``stddev`` in place of ``rate`` and no ``broadcast_dims``.

    Attributes:
      stddev: the noise standard deviation, finite and ``>= 0``; a Python
        number or a (possibly traced) JAX scalar.
      deterministic, rng_collection: as in :class:`Dropout`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from dropoutx import linen as dxl
      >>> x = jnp.zeros((1000, 100))
      >>> y = dxl.GaussianNoise(0.1).apply(
      ...     {}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> y.dtype, bool(abs(y.std() - 0.1) < 0.001)
      (dtype('float32'), True)
      >>> bool((dxl.GaussianNoise(0.1).apply({}, x, deterministic=True) == x).all())
      True
    """

    stddev: ArrayLike
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.nowrap
    def _check(self) -> None:
        _validate.stddev(f"linen.{type(self).__name__}", self.stddev)

    def _needs_random_bits(self) -> bool:
        # Only a concrete stddev of 0 (the identity) needs no key.
        return _concrete(self.stddev) != 0.0

    def _transform(self, key: Any, inputs: ArrayLike, deterministic: bool) -> jax.Array:
        return dx.gaussian_noise(key, inputs, self.stddev, deterministic=deterministic)


class AnnealedDropout(_Stochastic):
    """Inverted dropout at ``rate = schedule(step)``, with ``step`` given at call time.

    While training, ``y = inverted_dropout(key, x, schedule(step))``; at
    inference ``y = x``. Calls :func:`dropoutx.annealed_dropout`. Linen modules
    hold no mutable state here, so pass the training step at each call, e.g.
    the optimizer's step count; it may be traced, so one jitted train step
    serves the whole run. Fields and call as :class:`Dropout`, with
    ``schedule`` in place of ``rate`` and a fourth call argument, ``step``
    (positional too, since ``nn.vmap`` drops keyword arguments).

    Attributes:
      schedule: a callable ``step -> rate``, e.g. any optax schedule such as
        ``optax.linear_schedule(0.5, 0.0, 10_000)`` (Rennie et al. 2014).
      broadcast_dims: axes that share one mask value.
      deterministic, rng_collection: as in :class:`Dropout`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from dropoutx import linen as dxl
      >>> layer = dxl.AnnealedDropout(optax.linear_schedule(0.5, 0.0, 100))
      >>> x = jnp.ones((4, 8))
      >>> rngs = {"dropout": jax.random.key(0)}
      >>> y = layer.apply({}, x, deterministic=False, step=0, rngs=rngs)
      >>> sorted(set(y.ravel().tolist()))  # rate 0.5 at step 0
      [0.0, 2.0]
      >>> y = layer.apply({}, x, deterministic=False, step=100, rngs=rngs)
      >>> bool((y == x).all())  # the rate has decayed to 0
      True
    """

    schedule: Callable[[Any], ArrayLike]
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.nowrap
    def _check(self) -> None:
        _validate.schedule(f"linen.{type(self).__name__}", self.schedule)

    @nn.compact
    def __call__(
        self,
        inputs: ArrayLike,
        deterministic: bool | None = None,
        rng: Any = None,
        step: ArrayLike | None = None,
    ) -> jax.Array:
        """Applies inverted dropout at the scheduled rate for ``step``.

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: if true, return ``inputs`` unchanged; exactly one of
            the field and this argument must be set.
          rng: a key to use instead of ``make_rng(rng_collection)``.
          step: the training step, a Python int or a (possibly traced) JAX
            integer scalar. Required while training, ignored at inference.

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        if self._is_deterministic(deterministic):
            return dx.annealed_dropout(None, inputs, 0, self.schedule, deterministic=True)
        if step is None:
            raise ValueError(
                f"{self._owner()}: step is required while training; pass the "
                f"training step at call time, e.g. module(x, deterministic=False, "
                f"step=step), where step is the optimizer's step count or your own "
                f"counter (it may be a traced jnp integer)."
            )
        return dx.annealed_dropout(
            self._draw_key(rng), inputs, step, self.schedule, broadcast_dims=self.broadcast_dims
        )


class AlphaDropout(_Stochastic):
    """Alpha dropout for self-normalizing networks (SELU), keeping mean 0 and variance 1.

    While training, dropped units are set to SELU's negative saturation
    ``alpha'`` and an affine correction ``y = a * where(mask, x, alpha') + b``
    keeps inputs of mean 0 and variance 1 at mean 0 and variance 1 (Klambauer
    et al. 2017); at inference ``y = x``. Calls :func:`dropoutx.alpha_dropout`.
    Fields and call as :class:`Dropout`.

    Attributes:
      rate: the probability of dropping a unit, in ``[0, 1]``; a Python number
        or a (possibly traced) JAX scalar.
      broadcast_dims: axes that share one mask value (the spatial axes, for
        feature alpha dropout).
      deterministic, rng_collection: as in :class:`Dropout`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from dropoutx import linen as dxl
      >>> x = jax.random.normal(jax.random.key(1), (1000, 1000))
      >>> layer = dxl.AlphaDropout(0.2)
      >>> y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> y.shape, y.dtype
      ((1000, 1000), dtype('float32'))
      >>> bool(abs(y.mean()) < 0.01), bool(abs(y.var() - 1) < 0.01)  # mean 0, variance 1
      (True, True)
      >>> bool((layer.apply({}, x, deterministic=True) == x).all())
      True
    """

    rate: ArrayLike
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    _function = staticmethod(dx.alpha_dropout)


class DropPath(_Stochastic):
    """Drop path (stochastic depth): drop whole examples of a residual branch.

    While training, one keep decision per example (axis 0) applies to the whole
    example, ``y[i] = where(mask[i], x[i] / (1 - rate), 0)`` (no rescaling if
    ``scale_by_keep`` is false); at inference ``y = x`` (Huang et al. 2016).
    Use it on a residual branch: ``x + DropPath(rate)(branch(x))``. Calls
    :func:`dropoutx.drop_path`. Fields and call as :class:`Dropout`, with
    ``scale_by_keep`` in place of ``broadcast_dims``.

    Attributes:
      rate: the probability of dropping an example, in ``[0, 1]``; a Python
        number or a (possibly traced) JAX scalar.
      scale_by_keep: if true, scale kept examples by ``1 / (1 - rate)``.
      deterministic, rng_collection: as in :class:`Dropout`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from dropoutx import linen as dxl
      >>> x = jnp.ones((8, 3, 4))
      >>> layer = dxl.DropPath(0.5, deterministic=False)
      >>> y = layer.apply({}, x, rngs={"dropout": jax.random.key(0)})
      >>> y.shape, y.dtype
      ((8, 3, 4), dtype('float32'))
      >>> per_example = y.reshape(8, -1)
      >>> bool((per_example == per_example[:, :1]).all())  # whole examples
      True
      >>> sorted(set(y.ravel().tolist()))  # dropped, or kept and scaled by 1 / 0.5
      [0.0, 2.0]
    """

    rate: ArrayLike
    scale_by_keep: bool = True
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def _transform(self, key: Any, inputs: ArrayLike, deterministic: bool) -> jax.Array:
        return dx.drop_path(
            key, inputs, self.rate, deterministic=deterministic, scale_by_keep=self.scale_by_keep
        )


class DropConnectDense(_Stochastic):
    """A :class:`flax.linen.Dense` layer whose kernel is dropped out while training.

    DropConnect (Wan et al. 2013): while training, ``y = x @ W + b`` with ``W
    = inverted_dropout(key, kernel, rate)``, one mask for the kernel per call,
    shared by every example of the batch; at inference ``y = x @ kernel + b``,
    exactly what :class:`flax.linen.Dense` computes. The parameters
    (``kernel`` of shape ``(in_features, features)`` and ``bias``), their
    initialisers and names are those of :class:`flax.linen.Dense`, so the two
    load each other's checkpoints. The mask comes from
    :func:`dropoutx.inverted_dropout`. ``deterministic`` and the key are
    resolved as in :class:`Dropout`.

    Attributes:
      features: the number of output features.
      rate: the probability of dropping each kernel entry, in ``[0, 1]``; a
        Python number or a (possibly traced) JAX scalar.
      use_bias: whether to add a bias to the output.
      dtype: the dtype of the computation (default: inferred from the input
        and the parameters).
      param_dtype: the dtype of the parameters.
      precision: the precision of the matmul, see ``jax.lax.Precision``.
      kernel_init: the kernel initialiser (``lecun_normal``, as in ``Dense``).
      bias_init: the bias initialiser (zeros, as in ``Dense``).
      deterministic: if true, use the kernel unchanged; may instead be given at
        call time.
      rng_collection: as in :class:`Dropout`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from dropoutx import linen as dxl
      >>> layer = dxl.DropConnectDense(4, rate=0.5)
      >>> x = jnp.ones((2, 3))
      >>> variables = layer.init(jax.random.key(0), x, deterministic=True)
      >>> jax.tree.map(jnp.shape, variables["params"])
      {'bias': (4,), 'kernel': (3, 4)}
      >>> y = layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
      >>> y.shape, y.dtype
      ((2, 4), dtype('float32'))
      >>> bool((y[0] == y[1]).all())  # one kernel mask for the whole batch
      True
      >>> h = layer.apply(variables, x, deterministic=True)  # inference: a plain Dense
      >>> bool((h == nn.Dense(4).apply(variables, x)).all())
      True
    """

    features: int
    rate: ArrayLike
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: Any = None
    ) -> jax.Array:
        """Applies the dense layer, with a dropped-out kernel while training.

        The parameters are created before the key is drawn, as in
        :class:`flax.linen.Dense`, so that ``init`` without a ``'dropout'`` rng
        (which then falls back to ``'params'``) gives Dense's parameters.

        Args:
          inputs: the inputs, features on the last axis.
          deterministic: if true, use the kernel unchanged; exactly one of the
            field and this argument must be set.
          rng: a key to use instead of ``make_rng(rng_collection)``.

        Returns:
          An array of shape ``inputs.shape[:-1] + (features,)``.
        """
        kernel = self.param(
            "kernel", self.kernel_init, (jnp.shape(inputs)[-1], self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        key, deterministic = self._resolve(deterministic, rng)
        kernel = dx.inverted_dropout(key, kernel, self.rate, deterministic=deterministic)
        inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        outputs = jax.lax.dot_general(
            inputs, kernel, (((jnp.ndim(inputs) - 1,), (0,)), ((), ())), precision=self.precision
        )
        if bias is not None:
            outputs += jnp.reshape(bias, (1,) * (outputs.ndim - 1) + (-1,))
        return outputs
