"""Runs gx.lbfgs on parameters sharded over an explicit-sharding mesh; prints one JSON report.

Started by tests/test_second_order_sharding.py in a fresh interpreter, because the
device count is fixed when jax starts:
``XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/scripts/sharded_lbfgs_run.py``.

The mesh's one axis has ``AxisType.Explicit``, so every array's type carries
its sharding and an operation that would need an implicit re-layout (a
concatenation of differently sharded leaves, a contraction over a sharded
axis without an output sharding) is an error. The report says whether the
steps ran, whether the L-BFGS memory kept the params' shardings (with the
memory axis unsharded in front), and the largest difference from the same
steps on one device.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

import gradxform as gx

SPECS = {"w": PartitionSpec("x", None), "b": PartitionSpec("x"), "scale": PartitionSpec()}


def initial_params():
    rng = np.random.default_rng(0)
    shapes = {"w": (32, 4), "b": (16,), "scale": (3,)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def loss(params):
    total = 0.0
    for i, leaf in enumerate(jax.tree.leaves(params)):
        total = total + (i + 1.0) * jnp.sum((leaf - 0.5) ** 2) + 0.1 * jnp.sum(leaf**4)
    return total


def run(params, steps=6):
    opt = gx.lbfgs(4)

    @jax.jit
    def step(params, state):
        value, grad = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return gx.apply_updates(params, updates), state

    state = opt.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


def report() -> dict:
    assert len(jax.devices()) == 8, jax.devices()
    mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
    host = initial_params()
    reference, _ = run(jax.device_put(host, jax.devices()[0]))
    report = {"ran": False}
    with jax.set_mesh(mesh):
        shardings = {k: NamedSharding(mesh, spec) for k, spec in SPECS.items()}
        params, state = run(jax.device_put(host, shardings))
        memory = state[0].model.s
        report = {
            "ran": True,
            "params_keep_sharding": all(
                params[k].sharding.is_equivalent_to(shardings[k], params[k].ndim) for k in SPECS
            ),
            "memory_sharded_like_params": all(
                memory[k].sharding.is_equivalent_to(
                    NamedSharding(mesh, PartitionSpec(None, *SPECS[k])), memory[k].ndim
                )
                for k in SPECS
            ),
            "max_abs_diff": max(
                float(np.max(np.abs(np.asarray(params[k]) - np.asarray(reference[k]))))
                for k in SPECS
            ),
            "loss_decreased": float(loss(params)) < float(loss(host)),
        }
    return report


def main():
    print(json.dumps(report()))


if __name__ == "__main__":
    main()
