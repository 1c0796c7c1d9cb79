"""Flax NNX modules for the dropoutx transforms.

``from dropoutx import nnx as dxn``. Each module resolves the
``deterministic`` flag (call argument, else attribute) and the PRNG key (call
``rngs``, else the stream forked at construction), then calls the matching
function of :mod:`dropoutx`, which holds the maths and validates the
arguments. ``model.train()``, ``model.eval()`` and ``nnx.view(model,
deterministic=...)`` set the flag, as for :class:`flax.nnx.Dropout`.

:class:`Dropout` is a drop-in replacement for :class:`flax.nnx.Dropout`: the
same constructor and call, the same state (the forked ``rngs`` stream, so the
parameters of the surrounding model do not change), and the same output at
inference. While training it draws a different (but equally distributed) mask,
keeps bf16 and fp16 unbiased, and accepts a ``rate`` held as a JAX array.

The rest of the family: :class:`AlphaDropout` (for SELU networks),
:class:`DropPath` (stochastic depth, whole examples) and
:class:`DropConnectLinear` (a :class:`flax.nnx.Linear` whose kernel, not its
output, is dropped out while training).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype
from jax.typing import ArrayLike

from dropoutx import _validate
from dropoutx._bernoulli import annealed_dropout, inverted_dropout, vanilla_dropout
from dropoutx._family import alpha_dropout, drop_path
from dropoutx._gaussian import gaussian_dropout, gaussian_noise

__all__ = (
    "AlphaDropout",
    "AnnealedDropout",
    "AnnealingStep",
    "DropConnectLinear",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "GaussianNoise",
    "VanillaDropout",
)

RngsLike = nnx.Rngs | nnx.RngStream | jax.Array | np.ndarray
# The initialisers of flax.nnx.Linear, for DropConnectLinear.
_DEFAULT_KERNEL_INIT = nnx.initializers.lecun_normal()
_DEFAULT_BIAS_INIT = nnx.initializers.zeros_init()


def _fork_stream(
    owner: str, rngs: nnx.Rngs | nnx.RngStream | None, rng_collection: str
) -> nnx.RngStream | None:
    """The stream a module keeps: a fork of ``rngs[rng_collection]`` or of the stream."""
    if isinstance(rngs, nnx.Rngs):
        rngs = rngs[rng_collection]
    if isinstance(rngs, nnx.RngStream):
        stream: nnx.RngStream = rngs.fork()
        return stream
    if rngs is None:
        return None
    raise TypeError(
        f"dropoutx.nnx.{owner}: rngs must be an nnx.Rngs, an nnx.RngStream or "
        f"None, got {type(rngs).__name__}. To use a fixed key, pass it at call "
        f"time (module(x, rngs=key)), or construct with rngs=nnx.Rngs(dropout=key)."
    )


class _Stochastic(nnx.Module):
    """Flag and key resolution shared by the modules; holds no maths."""

    deterministic: bool | None
    rng_collection: str
    rngs: nnx.RngStream | None

    def _owner(self) -> str:
        return f"dropoutx.nnx.{type(self).__name__}"

    def _is_deterministic(self, deterministic: bool | None) -> bool:
        """The call's ``deterministic`` if given, else the attribute."""
        if deterministic is not None:
            return bool(deterministic)
        if self.deterministic is not None:
            return bool(self.deterministic)
        name = type(self).__name__
        raise ValueError(
            f"{self._owner()}: no `deterministic` value was given (it is None "
            f"both as an attribute and at call time). Do one of the following:\n"
            f"  1. pass it at call time: module(x, deterministic=True/False);\n"
            f"  2. pass it to the constructor: dxn.{name}(..., deterministic=True/False);\n"
            f"  3. set it on the whole model: model.train() or model.eval();\n"
            f"  4. make a view: nnx.view(model, deterministic=True/False)."
        )

    def _key(self, rngs: RngsLike | None) -> Any:
        """A key from the call's ``rngs`` if given, else from the module's stream."""
        source = rngs if rngs is not None else self.rngs
        if source is None:
            raise ValueError(
                f"{self._owner()}: deterministic=False needs a PRNG key, but no "
                f"rngs were given to the constructor or at call time. Pass "
                f"rngs=nnx.Rngs(dropout=0) (or the model's rngs) when constructing "
                f"the module, or rngs=... (an nnx.Rngs, an nnx.RngStream or a key) "
                f"when calling it; for inference, call model.eval(), pass "
                f"deterministic=True, or use nnx.view(model, deterministic=True)."
            )
        if isinstance(source, nnx.Rngs):
            return source[self.rng_collection]()
        if isinstance(source, nnx.RngStream):
            return source()
        if isinstance(source, jax.Array | np.ndarray):
            return source
        raise TypeError(
            f"{self._owner()}: rngs must be an nnx.Rngs, an nnx.RngStream or a "
            f"PRNG key (jax.random.key(0)), got {type(source).__name__}."
        )

    def _resolve(
        self, deterministic: bool | None, rngs: RngsLike | None, concrete: float | None
    ) -> tuple[Any, bool]:
        """``(key, deterministic)`` for the functional call.

        No key is drawn at inference, nor at a concrete zero rate (``concrete
        == 0``), where the transform is the identity either way; like
        :class:`flax.nnx.Dropout`, such a module then needs no rngs.
        """
        if self._is_deterministic(deterministic) or concrete == 0.0:
            return None, True
        return self._key(rngs), False

    def set_view(self, deterministic: bool | None = None) -> None:
        """Sets the mode for ``nnx.view``, ``model.train()`` and ``model.eval()``.

        Args:
          deterministic: if True, the module is in inference mode (no noise);
            if False, in training mode; None leaves it unchanged.
        """
        if deterministic is not None:
            self.deterministic = deterministic


class Dropout(_Stochastic):
    """Inverted dropout, a drop-in replacement for :class:`flax.nnx.Dropout`.

    While training, ``y = where(mask, x / (1 - rate), 0)`` with ``mask ~
    Bernoulli(1 - rate)`` shared along ``broadcast_dims``; at inference ``y =
    x``. Calls :func:`dropoutx.inverted_dropout`.

    Args:
      rate: the probability of dropping a unit (not the keep rate), in ``[0,
        1]``; a Python number, or a JAX scalar (then held as state and traced
        under ``nnx.jit``, so changing it does not recompile).
      broadcast_dims: axes that share one mask value (e.g. the spatial axes,
        for channel dropout).
      deterministic: if true, return the input unchanged. ``model.eval()``,
        ``model.train()`` and ``nnx.view`` set it; a call-time value takes
        precedence.
      rng_collection: the stream of an ``nnx.Rngs`` that keys are drawn from.
      rngs: an ``nnx.Rngs`` (its ``rng_collection`` stream is forked) or an
        ``nnx.RngStream`` (forked); may be omitted if keys are passed at call
        time or the module is only used at inference.

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1]``.
      TypeError: if ``rngs`` is not an ``nnx.Rngs``, ``nnx.RngStream`` or None.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> class MLP(nnx.Module):
      ...     def __init__(self, rngs: nnx.Rngs):
      ...         self.linear = nnx.Linear(3, 16, rngs=rngs)
      ...         self.dropout = dxn.Dropout(0.5, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.dropout(self.linear(x))
      >>> model = MLP(nnx.Rngs(0))
      >>> x = jnp.ones((4, 3))
      >>> y = model(x)  # training mode by default
      >>> model.eval()
      >>> h = model(x)  # inference: no dropout
      >>> y.shape, y.dtype
      ((4, 16), dtype('float32'))
      >>> bool(jnp.all((y == 0) | jnp.isclose(y, 2 * h)))  # kept units scaled by 1 / 0.5
      True
    """

    def __init__(
        self,
        rate: ArrayLike,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        _validate.rate(f"nnx.{type(self).__name__}", rate)
        self.rate = rate
        self.broadcast_dims = broadcast_dims
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = nnx.data(_fork_stream(type(self).__name__, rngs, rng_collection))

    def __call__(
        self,
        inputs: ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
    ) -> jax.Array:
        """Applies a random dropout mask to ``inputs``.

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: overrides the attribute if given.
          rngs: overrides the module's stream if given: an ``nnx.Rngs`` (its
            ``rng_collection`` stream is used), an ``nnx.RngStream`` or a key.

        Returns:
          The masked inputs, scaled by ``1 / (1 - rate)``, in the input dtype.
        """
        concrete = _validate.rate(f"nnx.{type(self).__name__}", self.rate)
        key, deterministic = self._resolve(deterministic, rngs, concrete)
        return inverted_dropout(
            key, inputs, self.rate, deterministic=deterministic, broadcast_dims=self.broadcast_dims
        )


class VanillaDropout(_Stochastic):
    """Vanilla dropout: no rescaling while training, ``x * (1 - rate)`` at inference.

    While training, ``y = where(mask, x, 0)``; at inference ``y = x * (1 -
    rate)``, the weight-scaling rule of Srivastava et al. (2014). Calls
    :func:`dropoutx.vanilla_dropout`. Constructor and call as :class:`Dropout`.

    Args:
      rate: the probability of dropping a unit, in ``[0, 1]``.
      broadcast_dims: axes that share one mask value.
      deterministic: if true, scale by ``1 - rate`` instead of masking.
      rng_collection: the stream of an ``nnx.Rngs`` that keys are drawn from.
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.VanillaDropout(0.25, rngs=nnx.Rngs(dropout=0))
      >>> x = jnp.full((2, 8), 4.0)
      >>> sorted(set(layer(x).ravel().tolist()))  # no rescaling while training
      [0.0, 4.0]
      >>> layer(x, deterministic=True)[0, :2]  # weight scaling at inference
      Array([3., 3.], dtype=float32)
    """

    def __init__(
        self,
        rate: ArrayLike,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        _validate.rate(f"nnx.{type(self).__name__}", rate)
        self.rate = rate
        self.broadcast_dims = broadcast_dims
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = nnx.data(_fork_stream(type(self).__name__, rngs, rng_collection))

    def __call__(
        self,
        inputs: ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
    ) -> jax.Array:
        """Masks ``inputs`` while training, scales them by ``1 - rate`` at inference.

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: overrides the attribute if given.
          rngs: overrides the module's stream if given (Rngs, RngStream or key).

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        concrete = _validate.rate(f"nnx.{type(self).__name__}", self.rate)
        # At a concrete rate of 0 both modes are the identity, so no key is drawn.
        key, deterministic = self._resolve(deterministic, rngs, concrete)
        return vanilla_dropout(
            key, inputs, self.rate, deterministic=deterministic, broadcast_dims=self.broadcast_dims
        )


class GaussianDropout(_Stochastic):
    """Gaussian dropout: multiply by ``N(1, rate / (1 - rate))`` noise while training.

    While training, ``y = x * (1 + sqrt(rate / (1 - rate)) * eps)`` with
    ``eps ~ N(0, 1)`` shared along ``broadcast_dims``; at inference ``y = x``.
    Calls :func:`dropoutx.gaussian_dropout`. Constructor and call as
    :class:`Dropout`.

    Args:
      rate: the drop rate whose Bernoulli variance the noise matches, in ``[0,
        1)``.
      broadcast_dims: axes that share one noise value.
      deterministic: if true, return the input unchanged.
      rng_collection: the stream of an ``nnx.Rngs`` that keys are drawn from.
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.GaussianDropout(0.5, rngs=nnx.Rngs(dropout=0))
      >>> y = layer(jnp.ones((1000, 100), jnp.bfloat16))
      >>> y.shape, y.dtype
      ((1000, 100), dtype(bfloat16))
      >>> bool(abs(y.astype(jnp.float32).mean() - 1) < 0.02)  # E[y] = x
      True
    """

    def __init__(
        self,
        rate: ArrayLike,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        _validate.rate(f"nnx.{type(self).__name__}", rate, allow_one=False)
        self.rate = rate
        self.broadcast_dims = broadcast_dims
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = nnx.data(_fork_stream(type(self).__name__, rngs, rng_collection))

    def __call__(
        self,
        inputs: ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
    ) -> jax.Array:
        """Multiplies ``inputs`` by Gaussian noise of mean 1 while training.

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: overrides the attribute if given.
          rngs: overrides the module's stream if given (Rngs, RngStream or key).

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        concrete = _validate.rate(f"nnx.{type(self).__name__}", self.rate, allow_one=False)
        key, deterministic = self._resolve(deterministic, rngs, concrete)
        return gaussian_dropout(
            key, inputs, self.rate, deterministic=deterministic, broadcast_dims=self.broadcast_dims
        )


class GaussianNoise(_Stochastic):
    """Additive Gaussian noise: ``x + stddev * eps`` while training, ``x`` at inference.

    Calls :func:`dropoutx.gaussian_noise`. Constructor and call as
    :class:`Dropout`, with ``stddev`` in place of ``rate`` and no
    ``broadcast_dims``.

    Args:
      stddev: the noise standard deviation, finite and ``>= 0``; a Python
        number or a JAX scalar.
      deterministic: if true, return the input unchanged.
      rng_collection: the stream of an ``nnx.Rngs`` that keys are drawn from.
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.GaussianNoise(0.1, rngs=nnx.Rngs(dropout=0))
      >>> x = jnp.zeros((1000, 100))
      >>> y = layer(x)
      >>> y.dtype, bool(abs(y.std() - 0.1) < 0.001)
      (dtype('float32'), True)
      >>> layer.eval()
      >>> bool((layer(x) == x).all())
      True
    """

    def __init__(
        self,
        stddev: ArrayLike,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        _validate.stddev(f"nnx.{type(self).__name__}", stddev)
        self.stddev = stddev
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = nnx.data(_fork_stream(type(self).__name__, rngs, rng_collection))

    def __call__(
        self,
        inputs: ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
    ) -> jax.Array:
        """Adds Gaussian noise to ``inputs`` while training.

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: overrides the attribute if given.
          rngs: overrides the module's stream if given (Rngs, RngStream or key).

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        concrete = _validate.stddev(f"nnx.{type(self).__name__}", self.stddev)
        key, deterministic = self._resolve(deterministic, rngs, concrete)
        return gaussian_noise(key, inputs, self.stddev, deterministic=deterministic)


class AnnealingStep(nnx.BatchStat[jax.Array]):
    """The training-step counter of :class:`AnnealedDropout` (int32 scalar).

    A subclass of :class:`flax.nnx.BatchStat`: training state that is not
    differentiated, saved and restored with the model (``nnx.state``,
    ``nnx.split``), and selected by the ``nnx.BatchStat`` filter alongside
    batch-norm statistics.
    """


class AnnealedDropout(_Stochastic):
    """Inverted dropout at ``rate = schedule(step)``, counting its own steps.

    While training, ``y = inverted_dropout(key, x, schedule(step))`` and the
    counter ``self.step`` (an :class:`AnnealingStep` variable, int32, starting
    at 0) advances by one; at inference ``y = x`` and the counter is left
    alone. The counter is part of the model's state, so it is traced (not
    recompiled) under ``nnx.jit`` and saved and restored with ``nnx.state`` /
    ``nnx.update`` or ``nnx.split`` / ``nnx.merge``. A ``step`` given at call
    time is used instead of the counter, which it leaves unchanged. Calls
    :func:`dropoutx.annealed_dropout`.

    The counter counts training calls of this module: a module applied twice
    per train step advances twice per train step.

    Args:
      schedule: a callable ``step -> rate``, e.g. any optax schedule such as
        ``optax.linear_schedule(0.5, 0.0, 10_000)`` (Rennie et al. 2014).
      broadcast_dims: axes that share one mask value.
      deterministic: if true, return the input unchanged.
      rng_collection: the stream of an ``nnx.Rngs`` that keys are drawn from.
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None.

    Raises:
      TypeError: if ``schedule`` is not callable.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.AnnealedDropout(optax.linear_schedule(0.5, 0.0, 100),
      ...                             rngs=nnx.Rngs(dropout=0))
      >>> x = jnp.ones((4, 8))
      >>> sorted(set(layer(x).ravel().tolist()))  # rate 0.5 at step 0
      [0.0, 2.0]
      >>> layer.step[...]
      Array(1, dtype=int32)
      >>> _ = layer(x, deterministic=True)  # inference does not count
      >>> layer.step[...]
      Array(1, dtype=int32)
      >>> bool((layer(x, step=100) == x).all())  # explicit step: rate 0
      True
    """

    def __init__(
        self,
        schedule: Callable[[Any], ArrayLike],
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.schedule = _validate.schedule(f"nnx.{type(self).__name__}", schedule)
        self.broadcast_dims = broadcast_dims
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = nnx.data(_fork_stream(type(self).__name__, rngs, rng_collection))
        self.step = AnnealingStep(jnp.zeros((), jnp.int32))

    def __call__(
        self,
        inputs: ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
        step: ArrayLike | None = None,
    ) -> jax.Array:
        """Applies inverted dropout at the scheduled rate and advances the counter.

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: overrides the attribute if given.
          rngs: overrides the module's stream if given (Rngs, RngStream or key).
          step: if given, the step to use instead of the counter (which then
            does not advance); a Python int or a (possibly traced) JAX scalar.

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        if self._is_deterministic(deterministic):
            return annealed_dropout(None, inputs, 0, self.schedule, deterministic=True)
        key = self._key(rngs)
        current = self.step[...] if step is None else step
        outputs = annealed_dropout(
            key, inputs, current, self.schedule, broadcast_dims=self.broadcast_dims
        )
        if step is None:
            self.step[...] = current + 1
        return outputs


class AlphaDropout(_Stochastic):
    """Alpha dropout for self-normalizing networks (SELU), keeping mean 0 and variance 1.

    While training, dropped units are set to SELU's negative saturation
    ``alpha'`` and an affine correction ``y = a * where(mask, x, alpha') + b``
    keeps inputs of mean 0 and variance 1 at mean 0 and variance 1 (Klambauer
    et al. 2017); at inference ``y = x``. Calls :func:`dropoutx.alpha_dropout`.
    Constructor and call as :class:`Dropout`.

    Args:
      rate: the probability of dropping a unit, in ``[0, 1]``; a Python number
        or a JAX scalar.
      broadcast_dims: axes that share one mask value (the spatial axes, for
        feature alpha dropout).
      deterministic: if true, return the input unchanged.
      rng_collection: the stream of an ``nnx.Rngs`` that keys are drawn from.
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None.

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1]``.
      TypeError: if ``rngs`` is not an ``nnx.Rngs``, ``nnx.RngStream`` or None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.AlphaDropout(0.2, rngs=nnx.Rngs(dropout=0))
      >>> x = jax.random.normal(jax.random.key(1), (1000, 1000))
      >>> y = layer(x)
      >>> y.shape, y.dtype
      ((1000, 1000), dtype('float32'))
      >>> bool(abs(y.mean()) < 0.01), bool(abs(y.var() - 1) < 0.01)  # mean 0, variance 1
      (True, True)
      >>> layer.eval()
      >>> bool((layer(x) == x).all())
      True
    """

    def __init__(
        self,
        rate: ArrayLike,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        _validate.rate(f"nnx.{type(self).__name__}", rate)
        self.rate = rate
        self.broadcast_dims = broadcast_dims
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = nnx.data(_fork_stream(type(self).__name__, rngs, rng_collection))

    def __call__(
        self,
        inputs: ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
    ) -> jax.Array:
        """Applies alpha dropout to ``inputs`` while training.

        Args:
          inputs: the activations, of any floating dtype; typically the output
            of ``jax.nn.selu``.
          deterministic: overrides the attribute if given.
          rngs: overrides the module's stream if given (Rngs, RngStream or key).

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        concrete = _validate.rate(f"nnx.{type(self).__name__}", self.rate)
        key, deterministic = self._resolve(deterministic, rngs, concrete)
        return alpha_dropout(
            key, inputs, self.rate, deterministic=deterministic, broadcast_dims=self.broadcast_dims
        )


class DropPath(_Stochastic):
    """Drop path (stochastic depth): drop whole examples of a residual branch.

    While training, one keep decision per example (axis 0) applies to the whole
    example, ``y[i] = where(mask[i], x[i] / (1 - rate), 0)`` (no rescaling if
    ``scale_by_keep`` is false); at inference ``y = x`` (Huang et al. 2016).
    Use it on a residual branch: ``x + self.drop_path(self.branch(x))``. Calls
    :func:`dropoutx.drop_path`. Constructor and call as :class:`Dropout`, with
    ``scale_by_keep`` in place of ``broadcast_dims``.

    Args:
      rate: the probability of dropping an example, in ``[0, 1]``; a Python
        number or a JAX scalar.
      scale_by_keep: if true, scale kept examples by ``1 / (1 - rate)``.
      deterministic: if true, return the input unchanged.
      rng_collection: the stream of an ``nnx.Rngs`` that keys are drawn from.
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None.

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1]``.
      TypeError: if ``rngs`` is not an ``nnx.Rngs``, ``nnx.RngStream`` or None.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.DropPath(0.5, rngs=nnx.Rngs(dropout=0))
      >>> y = layer(jnp.ones((8, 3, 4)))
      >>> y.shape, y.dtype
      ((8, 3, 4), dtype('float32'))
      >>> per_example = y.reshape(8, -1)
      >>> bool((per_example == per_example[:, :1]).all())  # whole examples
      True
      >>> sorted(set(y.ravel().tolist()))  # dropped, or kept and scaled by 1 / 0.5
      [0.0, 2.0]
    """

    def __init__(
        self,
        rate: ArrayLike,
        *,
        scale_by_keep: bool = True,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        _validate.rate(f"nnx.{type(self).__name__}", rate)
        self.rate = rate
        self.scale_by_keep = scale_by_keep
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = nnx.data(_fork_stream(type(self).__name__, rngs, rng_collection))

    def __call__(
        self,
        inputs: ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
    ) -> jax.Array:
        """Drops whole examples of ``inputs`` while training.

        Args:
          inputs: the activations, of any floating dtype, batch on axis 0.
          deterministic: overrides the attribute if given.
          rngs: overrides the module's stream if given (Rngs, RngStream or key).

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        concrete = _validate.rate(f"nnx.{type(self).__name__}", self.rate)
        key, deterministic = self._resolve(deterministic, rngs, concrete)
        return drop_path(
            key, inputs, self.rate, deterministic=deterministic, scale_by_keep=self.scale_by_keep
        )


class DropConnectLinear(_Stochastic):
    """A :class:`flax.nnx.Linear` layer whose kernel is dropped out while training.

    DropConnect (Wan et al. 2013): while training, ``y = x @ W + b`` with ``W
    = inverted_dropout(key, kernel, rate)``, one mask for the kernel per call,
    shared by every example of the batch; at inference ``y = x @ kernel + b``,
    exactly what :class:`flax.nnx.Linear` computes. The parameters
    (``kernel`` of shape ``(in_features, out_features)`` and ``bias``) are
    initialised as in :class:`flax.nnx.Linear`, from ``rngs.params()``, so the
    same ``rngs`` give the same parameters. The dropout stream is then forked
    from ``rngs`` as in :class:`Dropout`. The mask comes from
    :func:`dropoutx.inverted_dropout`.

    Args:
      in_features: the number of input features.
      out_features: the number of output features.
      rate: the probability of dropping each kernel entry, in ``[0, 1]``; a
        Python number or a JAX scalar.
      use_bias: whether to add a bias to the output.
      dtype: the dtype of the computation (default: inferred from the input
        and the parameters).
      param_dtype: the dtype of the parameters.
      precision: the precision of the matmul, see ``jax.lax.Precision``.
      kernel_init: the kernel initialiser (``lecun_normal``, as in ``Linear``).
      bias_init: the bias initialiser (zeros, as in ``Linear``).
      deterministic: if true, use the kernel unchanged.
      rng_collection: the stream of an ``nnx.Rngs`` that dropout keys are drawn
        from.
      rngs: an ``nnx.Rngs``, for the parameters and the dropout stream (its
        ``rng_collection`` stream, else its default stream; if it has neither,
        pass keys at call time).

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.DropConnectLinear(3, 4, 0.5, rngs=nnx.Rngs(0))
      >>> layer.kernel.shape, layer.bias.shape
      ((3, 4), (4,))
      >>> x = jnp.ones((2, 3))
      >>> y = layer(x)  # training mode by default
      >>> y.shape, y.dtype
      ((2, 4), dtype('float32'))
      >>> bool((y[0] == y[1]).all())  # one kernel mask for the whole batch
      True
      >>> layer.eval()
      >>> linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))  # same rngs, same parameters
      >>> bool((layer(x) == linear(x)).all())  # inference: a plain Linear
      True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rate: ArrayLike,
        *,
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., Any] = _DEFAULT_KERNEL_INIT,
        bias_init: Callable[..., Any] = _DEFAULT_BIAS_INIT,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs,
    ) -> None:
        _validate.rate(f"nnx.{type(self).__name__}", rate)
        self.in_features = in_features
        self.out_features = out_features
        self.rate = rate
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.kernel = nnx.Param(
            kernel_init(rngs.params(), (in_features, out_features), param_dtype)
        )
        self.bias: nnx.Param[jax.Array] | None
        if use_bias:
            self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
        else:
            self.bias = nnx.data(None)
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        # Rngs with only a 'params' stream: keys must then be given at call time.
        has_stream = rng_collection in rngs or "default" in rngs
        dropout_rngs = rngs if has_stream else None
        self.rngs = nnx.data(_fork_stream(type(self).__name__, dropout_rngs, rng_collection))

    def __call__(
        self,
        inputs: ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
    ) -> jax.Array:
        """Applies the linear layer, with a dropped-out kernel while training.

        Args:
          inputs: the inputs, ``in_features`` on the last axis.
          deterministic: overrides the attribute if given.
          rngs: overrides the module's stream if given (Rngs, RngStream or key).

        Returns:
          An array of shape ``inputs.shape[:-1] + (out_features,)``.
        """
        concrete = _validate.rate(f"nnx.{type(self).__name__}", self.rate)
        key, deterministic = self._resolve(deterministic, rngs, concrete)
        kernel = inverted_dropout(key, self.kernel[...], self.rate, deterministic=deterministic)
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        outputs = jax.lax.dot_general(
            inputs, kernel, (((jnp.ndim(inputs) - 1,), (0,)), ((), ())), precision=self.precision
        )
        if bias is not None:
            outputs += jnp.reshape(bias, (1,) * (outputs.ndim - 1) + (-1,))
        return outputs
