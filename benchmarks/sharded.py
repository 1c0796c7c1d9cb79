"""Sharded against unsharded dropout throughput, in one process.

``python benchmarks/sharded.py`` times ``dx.dropout`` (forward, and the
gradient of ``sum(dropout(x) * w)``) on an array held by one device and on the
same array sharded over every device of a ``('data', 'model')`` mesh, beside
the copy floor ``x * 2`` in both layouts, and prints a markdown table of
throughput (GB/s of ``x`` processed) and of time over the floor.

On a CPU the devices are simulated (8 by default, set before JAX starts) and
share the machine's cores, so the sharded column measures the overhead of
partitioning, not a speed-up: dropout needs no communication, so its ratio to
the copy floor should be the same in both layouts. On a multi-GPU machine the
same script measures real scaling.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import dropoutx as dx


def _median_ms(fn: Callable[[], jax.Array], repeats: int) -> float:
    for _ in range(3):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=8, help="simulated CPU devices")
    parser.add_argument("--size", type=int, default=4096, help="x is size x size float32")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    # Before anything starts the backend; it only affects the CPU backend.
    jax.config.update("jax_num_cpu_devices", args.devices)
    devices = jax.devices()
    rows = 2 if len(devices) % 2 == 0 and len(devices) > 1 else 1
    mesh = jax.make_mesh((len(devices) // rows, rows), ("data", "model"))
    key = jax.random.key(0)
    host = np.random.default_rng(0).standard_normal((args.size, args.size), np.float32)
    layouts = {
        "one device": jax.device_put(host, devices[0]),
        f"sharded over {len(devices)} ({mesh.shape['data']}x{mesh.shape['model']})": (
            jax.device_put(host, NamedSharding(mesh, P("data", "model")))
        ),
    }
    layers: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
        "copy floor": lambda key, x: x * 2,
        "dx.dropout": lambda key, x: dx.dropout(key, x, 0.5),
    }
    gigabytes = host.nbytes / 1e9
    print(f"# dropoutx: sharded against unsharded, {args.size}x{args.size} float32, rate 0.5\n")
    print(
        f"Machine: {platform.processor() or platform.machine()}, backend "
        f"{jax.default_backend()}, {len(devices)} devices, jax {jax.__version__}. "
        f"Gradient: of sum(layer(x) * x) with respect to x.\n"
    )
    print("| pass | layout | layer | median ms | GB/s of x | time / floor |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for kind in ("forward", "gradient"):
        for layout, x in layouts.items():
            floor_ms = None
            for name, layer in layers.items():
                if kind == "forward":
                    compiled = jax.jit(layer)
                else:
                    compiled = jax.jit(
                        lambda key, x, layer=layer: jax.grad(lambda x: jnp.sum(layer(key, x) * x))(
                            x
                        )
                    )
                ms = _median_ms(lambda c=compiled, x=x: c(key, x), args.repeats)
                floor_ms = floor_ms or ms
                print(
                    f"| {kind} | {layout} | {name} | {ms:.1f} | "
                    f"{gigabytes / (ms / 1e3):.1f} | {ms / floor_ms:.2f} |"
                )


if __name__ == "__main__":
    main()
