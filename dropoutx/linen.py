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

Sequence and structured dropout: :class:`SpatialDropout` (whole feature maps),
:class:`DropBlock` (contiguous blocks of feature maps), and two wrappers of a
Flax recurrent cell for :class:`flax.linen.RNN`: :class:`RecurrentDropoutCell`
(variational dropout, one mask per sequence) and :class:`ZoneoutCell`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import errors
from flax.core.scope import in_filter
from flax.linen import module as linen_module
from flax.linen.dtypes import promote_dtype
from jax.typing import ArrayLike

import dropoutx as dx
from dropoutx import _cells, _traced, _validate

__all__ = (
    "AlphaDropout",
    "AnnealedDropout",
    "DropBlock",
    "DropConnectDense",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "GaussianNoise",
    "RecurrentDropoutCell",
    "SpatialDropout",
    "VanillaDropout",
    "ZoneoutCell",
)


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
        return _traced.concrete_value(self.rate) not in (0.0, 1.0)

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
        return _traced.concrete_value(self.stddev) != 0.0

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


class SpatialDropout(_Stochastic):
    """Spatial (channel) dropout: drop whole feature maps of each example.

    While training, ``y = inverted_dropout(key, x, rate)`` with one mask value
    per (example, channel), shared over every spatial axis (Tompson et al.
    2015), as Keras ``SpatialDropout2D`` and PyTorch ``Dropout2d``; at
    inference ``y = x``. Calls :func:`dropoutx.spatial_dropout`. Fields and call
    as :class:`Dropout`, with ``channel_axis`` and ``batch_axis`` in place of
    ``broadcast_dims``.

    Attributes:
      rate: the probability of dropping a feature map, in ``[0, 1]``; a Python
        number or a (possibly traced) JAX scalar.
      channel_axis: ``-1`` for channels-last maps (Flax's convolutions), ``1``
        for channels-first.
      batch_axis: the axis whose examples get independent masks, or ``None``
        for one unbatched example (e.g. under ``nn.vmap``).
      deterministic, rng_collection: as in :class:`Dropout`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from dropoutx import linen as dxl
      >>> x = jnp.ones((4, 5, 5, 8))  # NHWC
      >>> layer = dxl.SpatialDropout(0.5, deterministic=False)
      >>> y = layer.apply({}, x, rngs={"dropout": jax.random.key(0)})
      >>> y.shape, y.dtype
      ((4, 5, 5, 8), dtype('float32'))
      >>> bool((y == y[:, :1, :1, :]).all())  # each map is dropped or kept whole
      True
      >>> sorted(set(y.ravel().tolist()))  # kept maps scaled by 1 / 0.5
      [0.0, 2.0]
    """

    rate: ArrayLike
    channel_axis: int = -1
    batch_axis: int | None = 0
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def _transform(self, key: Any, inputs: ArrayLike, deterministic: bool) -> jax.Array:
        return dx.spatial_dropout(
            key,
            inputs,
            self.rate,
            deterministic=deterministic,
            channel_axis=self.channel_axis,
            batch_axis=self.batch_axis,
        )


class DropBlock(_Stochastic):
    """DropBlock: drop contiguous blocks of each feature map (Ghiasi et al. 2018).

    While training, ``y = drop_block(key, x, rate, block_size=block_size)``:
    blocks of ``block_size`` units along every spatial axis are dropped,
    independently per example and channel, about a fraction ``rate`` of the
    units in all, and the kept units are scaled by one factor (the number of
    units over the number kept); at inference ``y = x``. Calls
    :func:`dropoutx.drop_block`, which documents the seed probability. ``x``
    has the batch on axis 0, the channels on ``channel_axis`` and one or more
    spatial axes. Fields and call as :class:`Dropout`, with ``block_size`` and
    ``channel_axis`` in place of ``broadcast_dims``.

    Attributes:
      rate: the target fraction of dropped units, in ``[0, 1]``; a Python
        number or a (possibly traced) JAX scalar.
      block_size: the block width along every spatial axis, a Python int from
        1 to the smallest spatial size.
      channel_axis: ``-1`` for channels-last maps, ``1`` for channels-first.
      deterministic, rng_collection: as in :class:`Dropout`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from dropoutx import linen as dxl
      >>> x = jnp.ones((2, 12, 12, 3))  # NHWC
      >>> layer = dxl.DropBlock(0.3, block_size=4, deterministic=False)
      >>> y = layer.apply({}, x, rngs={"dropout": jax.random.key(0)})
      >>> y.shape, y.dtype
      ((2, 12, 12, 3), dtype('float32'))
      >>> bool(jnp.isclose(y.sum(), x.sum()))  # one scale: the total is preserved
      True
      >>> bool((dxl.DropBlock(0.3, block_size=4).apply({}, x, deterministic=True) == x).all())
      True
    """

    rate: ArrayLike
    block_size: int = 7
    channel_axis: int = -1
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.nowrap
    def _check(self) -> None:
        owner = f"linen.{type(self).__name__}"
        _validate.rate(owner, self.rate)
        _validate.count(owner, "block_size", self.block_size, minimum=1)

    def _needs_random_bits(self) -> bool:
        # Only a concrete rate of 0 (the identity) needs no key.
        return _traced.concrete_value(self.rate) != 0.0

    def _transform(self, key: Any, inputs: ArrayLike, deterministic: bool) -> jax.Array:
        return dx.drop_block(
            key,
            inputs,
            self.rate,
            block_size=self.block_size,
            deterministic=deterministic,
            channel_axis=self.channel_axis,
        )


# --- recurrent cells ----------------------------------------------------------------


def _enclosing_rnn_split(collection: str) -> tuple[nn.RNN | None, bool | None]:
    """The innermost running :class:`flax.linen.RNN` and how it treats ``collection``.

    Returns ``(rnn, split)``: ``split`` is True if ``rnn.split_rngs`` splits
    the collection (a new key at each step), False if it broadcasts it (one key
    for the whole sequence), None if no filter names it (no key inside the
    scan); ``(None, None)`` outside an ``nn.RNN``. Reads the stack of running
    Linen modules, so a hand-written ``nn.scan`` is not seen.
    """
    stack = getattr(linen_module._context, "module_stack", ())
    for module in reversed(stack):
        if isinstance(module, nn.RNN):
            for rng_filter, split in module.split_rngs.items():
                if in_filter(rng_filter, collection):
                    return module, bool(split)
            return module, None
    return None, None


class _WrappedCell(_Stochastic, nn.RNNCellBase):
    """The base of the recurrent-cell wrappers: a Flax cell, the key it needs, one step.

    A subclass declares ``cell`` and its rates as fields, names them in
    ``_rate_fields``, says in ``_split_over_time`` whether ``nn.RNN`` must
    split its rng collection over time (a new key each step) or broadcast it
    (one key per sequence), and supplies :meth:`_step`, which calls a function
    of ``_cells``.
    """

    cell: nn.Module
    _rate_fields: ClassVar[tuple[str, ...]]
    _split_over_time: ClassVar[bool]
    _key_need: ClassVar[str]  # what the key is for, in the enclosing-nn.RNN error

    @nn.nowrap
    def _check(self) -> None:
        owner = f"linen.{type(self).__name__}"
        fix = "e.g. nn.LSTMCell(features=64), nn.GRUCell(64) or nn.SimpleCell(64)"
        _validate.recurrent_cell(
            owner, self.cell, framework="Linen", module_type=nn.Module, fix=fix
        )
        for field in self._rate_fields:
            _validate.rate(owner if field == "rate" else f"{owner} ({field})", getattr(self, field))

    def _draw_key(self, rng: Any) -> Any:
        """As the base's, after checking how an enclosing ``nn.RNN`` passes the key in."""
        if rng is None:
            rnn, split = _enclosing_rnn_split(self.rng_collection)
            if rnn is not None and split is not self._split_over_time:
                if split is None:
                    problem = "does not pass it into the scan, so the cell has no key"
                elif split:
                    problem = "splits it, so every time step would draw a new mask (naive dropout)"
                else:
                    problem = "broadcasts it, so every time step would reuse one mask"
                collection = self.rng_collection
                raise ValueError(
                    f"{self._owner()}: {self._key_need.format(collection=repr(collection))}, "
                    f"but the enclosing nn.RNN's split_rngs={dict(rnn.split_rngs)!r} "
                    f"{problem}. Use nn.RNN(cell, split_rngs={{'params': False, "
                    f"{collection!r}: {self._split_over_time}}})."
                )
        return super()._draw_key(rng)

    @nn.nowrap
    def initialize_carry(self, rng: Any, input_shape: tuple[int, ...]) -> Any:
        """The wrapped cell's initial carry (see its ``initialize_carry``)."""
        return self.cell.initialize_carry(rng, input_shape)  # type: ignore[attr-defined]

    @property
    def num_feature_axes(self) -> int:
        """The wrapped cell's number of feature axes."""
        return int(self.cell.num_feature_axes)  # type: ignore[attr-defined]

    def _step(self, carry: Any, inputs: ArrayLike, key: Any, deterministic: bool) -> Any:
        raise NotImplementedError

    @nn.compact
    def __call__(  # type: ignore[override]
        self, carry: Any, inputs: ArrayLike, deterministic: bool | None = None, rng: Any = None
    ) -> tuple[Any, Any]:
        """One time step of the wrapped cell, with dropout (see the class docstring).

        Args:
          carry: the carry, as the wrapped cell's ``initialize_carry`` makes it.
          inputs: the inputs at this step.
          deterministic: as in :class:`Dropout`; ``nn.RNN`` does not pass it,
            so set the field instead.
          rng: a key to use instead of ``make_rng(rng_collection)``.

        Returns:
          ``(new_carry, output)``; the output is the new hidden state ``h``.
        """
        key, deterministic = self._resolve(deterministic, rng)
        return self._step(carry, inputs, key, deterministic)  # type: ignore[no-any-return]


class RecurrentDropoutCell(_WrappedCell):
    """Variational dropout for a recurrent cell: one mask per sequence (Gal & Ghahramani 2016).

    Wraps a Flax recurrent cell (:class:`flax.linen.LSTMCell`,
    :class:`~flax.linen.OptimizedLSTMCell`, :class:`~flax.linen.GRUCell`,
    :class:`~flax.linen.SimpleCell`, ...) for :class:`flax.linen.RNN`. While
    training, each step computes::

        cell((c, inverted_dropout(k_h, h, recurrent_rate)),
             inverted_dropout(k_x, x_t, input_rate))

    with ``(k_x, k_h) = split(key)`` and the same ``key`` at every step of the
    sequence, so each example (and unit) keeps ONE input mask and ONE
    recurrent mask for the whole sequence, as in "A theoretically grounded
    application of dropout in recurrent neural networks"; dropping a new
    mask at every step (naive dropout) destroys the memory the recurrence
    should carry. The carry is stored unmasked: the mask applies to ``h``
    where the cell reads it, and never to an LSTM's cell state ``c``. At
    inference the cell runs unchanged. The masks come from
    :func:`dropoutx.inverted_dropout`.

    The cell sees the masked ``h`` wherever it reads it. For the LSTM cells
    that is only their matrix products, exactly Gal and Ghahramani's scheme;
    a :class:`~flax.linen.GRUCell` also reads ``h`` in its update ``z * h``,
    and a ``SimpleCell(residual=True)`` in its residual, so there the
    masked ``h`` enters the new state too (as with TensorFlow's
    ``DropoutWrapper(variational_recurrent=True)``, and unlike Keras's GRU).

    **RNG set-up.** One key per sequence needs ``nn.RNN`` to broadcast the
    rng collection over time, not split it::

        nn.RNN(cell, split_rngs={"params": False, "dropout": False})

    Inside an ``nn.RNN`` that splits the collection (a new key, hence a new
    mask, at every step), or does not name it (no key at all; Flax would
    raise an obscure ``InvalidRngError``), the cell raises an error that
    names this fix. It cannot see a hand-written ``nn.scan``: there, pass
    ``split_rngs={..., "dropout": False}`` yourself. Called directly, every
    call draws a new key; to step through a sequence by hand, pass the same
    ``rng`` at each step.

    Attributes:
      cell: the wrapped Linen recurrent cell (an instance). Its parameters
        live under ``cell`` in this module's scope.
      input_rate: the probability of dropping an input unit, in ``[0, 1]``; a
        Python number or a (possibly traced) JAX scalar.
      recurrent_rate: the probability of dropping a unit of ``h``, in ``[0,
        1]``.
      deterministic: if true, run the cell without dropout. ``nn.RNN`` passes
        only ``(carry, x)``, so set it here, e.g. ``deterministic=not train``.
      rng_collection: the rng collection the key is drawn from.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from dropoutx import linen as dxl
      >>> class Encoder(nn.Module):
      ...     train: bool
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         cell = dxl.RecurrentDropoutCell(
      ...             nn.LSTMCell(16), input_rate=0.2, recurrent_rate=0.25,
      ...             deterministic=not self.train)
      ...         rnn = nn.RNN(cell, split_rngs={"params": False, "dropout": False})
      ...         return rnn(x)
      >>> x = jnp.ones((4, 10, 3))  # (batch, time, features)
      >>> variables = Encoder(train=False).init(jax.random.key(0), x)
      >>> y = Encoder(train=True).apply(variables, x, rngs={"dropout": jax.random.key(1)})
      >>> y.shape, y.dtype
      ((4, 10, 16), dtype('float32'))
      >>> bad = nn.RNN(dxl.RecurrentDropoutCell(nn.GRUCell(8), recurrent_rate=0.25,
      ...                                       deterministic=False))
      >>> try:  # an nn.RNN that passes no 'dropout' key into the scan
      ...     bad.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
      ... except ValueError as error:
      ...     print(str(error)[str(error).index("Use"):])
      Use nn.RNN(cell, split_rngs={'params': False, 'dropout': False}).
    """

    cell: nn.Module
    input_rate: ArrayLike = 0.0
    recurrent_rate: ArrayLike = 0.0
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    _rate_fields = ("input_rate", "recurrent_rate")
    _split_over_time = False
    _key_need = "variational dropout needs one {collection} key per sequence"

    def _needs_random_bits(self) -> bool:
        rates = map(_traced.concrete_value, (self.input_rate, self.recurrent_rate))
        return any(rate not in (0.0, 1.0) for rate in rates)

    def _step(self, carry: Any, inputs: ArrayLike, key: Any, deterministic: bool) -> Any:
        owner, rates = f"linen.{type(self).__name__}", (self.input_rate, self.recurrent_rate)
        return _cells.variational_step(owner, self.cell, carry, inputs, key, *rates, deterministic)


class ZoneoutCell(_WrappedCell):
    """Zoneout on a recurrent cell's carry (Krueger et al. 2017), a new mask at every step.

    Wraps a Flax recurrent cell for :class:`flax.linen.RNN`. Each step runs
    the cell, then each unit of each carry leaf keeps its previous value with
    probability ``rate`` while training,

        new_carry = zoneout(k_leaf, carry, cell_carry, rate)   (leaf by leaf),

    and takes the expectation ``rate * carry + (1 - rate) * cell_carry`` at
    inference (:func:`dropoutx.zoneout`). An LSTM's ``c`` and ``h`` both zone
    out, with independent masks and the same rate (the paper zones out both,
    and also reports separate rates for ``c`` and ``h``). The output is the
    zoned hidden state ``h`` (for every Flax cell the output is ``h``).

    **RNG set-up.** Zoneout draws a new mask at every step, so ``nn.RNN``
    must split the rng collection over time::

        nn.RNN(cell, split_rngs={"params": False, "dropout": True})

    Inside an ``nn.RNN`` that broadcasts it (the same mask at every step) or
    does not name it, the cell raises an error that names this fix. To
    combine it with a :class:`RecurrentDropoutCell`, which needs the
    opposite, give one of them its own collection, e.g.
    ``ZoneoutCell(..., rng_collection="zoneout")`` and ``split_rngs={"params":
    False, "dropout": False, "zoneout": True}``.

    Attributes:
      cell: the wrapped Linen recurrent cell (an instance).
      rate: the probability that a unit keeps its previous value, in ``[0,
        1]``; a Python number or a (possibly traced) JAX scalar.
      deterministic: if true, take the expectation instead of a mask. Set it
        here (``nn.RNN`` passes only ``(carry, x)``).
      rng_collection: the rng collection the key is drawn from.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from dropoutx import linen as dxl
      >>> cell = dxl.ZoneoutCell(nn.LSTMCell(16), 0.1, deterministic=False)
      >>> rnn = nn.RNN(cell, split_rngs={"params": False, "dropout": True})
      >>> x = jnp.ones((4, 10, 3))
      >>> rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
      >>> variables = rnn.init(rngs, x)
      >>> y = rnn.apply(variables, x, rngs={"dropout": jax.random.key(2)})
      >>> y.shape, y.dtype
      ((4, 10, 16), dtype('float32'))
    """

    cell: nn.Module
    rate: ArrayLike
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    _rate_fields = ("rate",)
    _split_over_time = True
    _key_need = "zoneout needs a new {collection} key at every step"

    def _needs_random_bits(self) -> bool:
        # Only a concrete rate of 0 (the cell unchanged) needs no key.
        return _traced.concrete_value(self.rate) != 0.0

    def _step(self, carry: Any, inputs: ArrayLike, key: Any, deterministic: bool) -> Any:
        owner = f"linen.{type(self).__name__}"
        return _cells.zoneout_step(owner, self.cell, carry, inputs, key, self.rate, deterministic)
