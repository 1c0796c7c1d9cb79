"""Data- and model-parallel training of a small MLP with dropoutx, on 8 CPU devices.

Run with ``python examples/sharded_training.py``; it simulates 8 CPU devices
itself and finishes in a few seconds.

The mesh is 4 x 2, ``('data', 'model')``. The batch is split over ``'data'``;
the MLP is split Megatron-style over ``'model'``: the first layer's kernel by
columns, the second's by rows, so the hidden activations of shape
``(batch, hidden)`` are sharded over both axes. ``dxl.Dropout`` on them (with
``dxl.GaussianNoise`` on the inputs) generates each device's block of the mask
from the same key, with no communication: the example asserts that the
dropout alone compiles to a program without collectives whose arrays are no
bigger than one block, and that dropout adds no collective to the train step.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dropoutx import linen as dxl

NUM_DEVICES = 8
COLLECTIVES = re.compile(
    r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)\b"
)


class MLP(nn.Module):
    """Input noise, then Dense (columns over 'model'), ReLU, dropout, Dense (rows over 'model')."""

    hidden: int = 256
    rate: float = 0.2
    noise: float = 0.05

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = dxl.GaussianNoise(self.noise, deterministic=not train)(x)
        x = nn.Dense(
            self.hidden,
            kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model")),
            bias_init=nn.with_partitioning(nn.initializers.zeros_init(), ("model",)),
        )(x)
        x = nn.relu(x)
        # (batch, hidden), sharded P('data', 'model'): each device masks its block.
        x = dxl.Dropout(self.rate, deterministic=not train)(x)
        return nn.Dense(
            1,
            kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), ("model", None)),
            bias_init=nn.with_partitioning(nn.initializers.zeros_init(), (None,)),
        )(x)


def collectives(hlo: str) -> list[str]:
    """The collective operations in a compiled (per-device) HLO program."""
    return COLLECTIVES.findall(hlo)


def train(mesh: jax.sharding.Mesh) -> None:
    """Trains the MLP on ``mesh``, checking that dropout needs no communication."""
    batch = NamedSharding(mesh, P("data", None))

    # A regression task: y = sin(x . w) + noise.
    data_key, noise_key, init_key, dropout_key = jax.random.split(jax.random.key(0), 4)
    inputs = jax.random.normal(data_key, (512, 16))
    w = jnp.linspace(-1.0, 1.0, 16)
    targets = jnp.sin(inputs @ w)[:, None] + 0.05 * jax.random.normal(noise_key, (512, 1))
    inputs, targets = jax.device_put((inputs, targets), batch)

    model = MLP()
    abstract = jax.eval_shape(lambda: model.init(init_key, inputs[:1], train=False))
    param_sharding = nn.get_sharding(abstract, mesh)  # from nn.with_partitioning
    params = jax.jit(
        lambda key: nn.unbox(model.init(key, inputs[:1], train=False)),
        out_shardings=param_sharding,
    )(init_key)["params"]
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)  # sharded like the parameters

    def loss_fn(params, key, x, y, train):
        rngs = {"dropout": key} if train else {}
        prediction = model.apply({"params": params}, x, train=train, rngs=rngs)
        return jnp.mean((prediction - y) ** 2)

    def train_step(params, opt_state, key, x, y, train=True):
        loss, grads = jax.value_and_grad(loss_fn)(params, key, x, y, train)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    # The parameters and optimizer state keep their shardings across steps.
    state_sharding = jax.tree.map(lambda array: array.sharding, (params, opt_state))
    step_fn = jax.jit(
        train_step,
        static_argnames="train",
        donate_argnums=(0, 1),
        out_shardings=(*state_sharding, None),
    )
    evaluate = jax.jit(lambda params, x, y: loss_fn(params, None, x, y, False))

    # Dropout alone on the sharded hidden activations: no communication, and
    # each device holds only its (512 / 4) x (256 / 2) block.
    hidden = jax.device_put(jnp.ones((512, 256)), NamedSharding(mesh, P("data", "model")))
    dropout = jax.jit(lambda key, h: dxl.Dropout(0.2).apply({}, h, False, rngs={"dropout": key}))
    hlo = dropout.lower(dropout_key, hidden).compile().as_text()
    assert not collectives(hlo), collectives(hlo)
    assert "[512,256]" not in hlo and "[128,128]" in hlo, "mask not generated per block"
    masked = dropout(dropout_key, hidden)
    assert masked.sharding.is_equivalent_to(hidden.sharding, 2), masked.sharding
    print(f"dropout on {hidden.shape} sharded {hidden.sharding.spec}: no collectives")

    # The train step has the same collectives with dropout and noise as without.
    args = (params, opt_state, dropout_key, inputs, targets)
    compiled_step = step_fn.lower(*args, train=True).compile()
    with_dropout = collectives(compiled_step.as_text())
    without = collectives(step_fn.lower(*args, train=False).compile().as_text())
    assert sorted(with_dropout) == sorted(without), (with_dropout, without)
    print(f"train step collectives, with or without dropout: {len(without)}")

    initial = float(evaluate(params, inputs, targets))
    print(f"initial eval loss {initial:.4f}")
    for step in range(151):
        key = jax.random.fold_in(dropout_key, step)
        params, opt_state, loss = compiled_step(params, opt_state, key, inputs, targets)
        # One step in flight at a time. With several queued, jaxlib's CPU
        # client (0.10) can hang here: the threads that run the 8 simulated
        # devices all wait, some in an all-reduce for a device whose turn
        # never comes, others for the inputs of a step that cannot start.
        jax.block_until_ready(loss)
        if step % 25 == 0:
            eval_loss = float(evaluate(params, inputs, targets))
            print(f"step {step:3d}  train loss {float(loss):.4f}  eval loss {eval_loss:.4f}")
    kernel = params["Dense_0"]["kernel"]
    assert kernel.sharding.spec == P(None, "model"), kernel.sharding
    final = float(evaluate(params, inputs, targets))
    assert final < 0.25 * initial, (initial, final)
    print(f"final eval loss {final:.4f} (from {initial:.4f})")


def main() -> None:
    # Simulated devices must be requested before JAX starts its backend.
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", NUM_DEVICES)
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    with jax.set_mesh(mesh):
        train(mesh)


if __name__ == "__main__":
    main()
