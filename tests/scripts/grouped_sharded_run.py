"""Runs every elementwise optimizer grouped on an 8-device CPU mesh; prints one JSON report.

Started by tests/test_grouped_sharding.py in a fresh interpreter, because the
device count is fixed when jax starts:
``XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.scripts.grouped_sharded_run``
from the repository root.

Parameters on a 4 x 2 mesh: three leaves sharded over both axes or one (two
groups of different shardings), one replicated, one whose first axis does not
divide evenly (kept unpacked). For each optimizer the report gives the packed
buffers' shardings, whether the compiled step has a collective, whether params
and the per-parameter view of the state keep the params' shardings, and
whether five grouped steps equal the same steps ungrouped (sharded, and on one
device) bit for bit.
"""

from __future__ import annotations

import json
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gradxform as gx
from tests.helpers import ALIASES

COLLECTIVES = re.compile(r"all-gather|all-reduce|reduce-scatter|collective-permute|all-to-all")
SHAPES = {"w1": (16, 8), "w2": (8, 4), "b1": (8,), "v": (4, 6), "scale": (3,), "odd": (6,)}
SPECS = {
    "w1": PartitionSpec("data", "model"),
    "w2": PartitionSpec("data", "model"),
    "b1": PartitionSpec("data"),
    "v": PartitionSpec("data"),
    "scale": PartitionSpec(),
    "odd": PartitionSpec("data"),
}


def tree_of(seed):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def run(tx, params, grads, place):
    """Five jitted steps of ``tx``; returns params, state and the compiled HLO."""

    def step(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    params = place(params)
    state = tx.init(params)
    jitted = jax.jit(step, donate_argnums=(0, 2))
    hlo = jitted.lower(params, place(grads[0]), state).compile().as_text()
    for g in grads:
        params, state = jitted(params, place(g), state)
    return params, state, hlo


def same_bits(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b)
    )


def ulps(a, b):
    """The largest difference between two trees, in float32 ulps of ``max(|b|, 1)``."""
    return max(
        (
            float(np.max(np.abs(np.float64(x) - np.float64(y)) / np.maximum(np.abs(y), 1.0)))
            / float(np.finfo(np.float32).eps)
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
            if np.asarray(x).dtype == np.float32
        ),
        default=0.0,
    )


def keeps(tree, shardings):
    """Whether each leaf of a params-shaped tree has its parameter's sharding."""
    return all(leaf.sharding.is_equivalent_to(shardings[k], leaf.ndim) for k, leaf in tree.items())


def report() -> dict:
    devices = np.array(jax.devices())
    assert devices.size == 8, devices
    mesh = Mesh(devices.reshape(4, 2), ("data", "model"))
    shardings = {k: NamedSharding(mesh, s) for k, s in SPECS.items()}
    uneven_ok = True
    try:
        jax.device_put(np.zeros(SHAPES["odd"], np.float32), shardings["odd"])
    except ValueError:  # this jax refuses uneven shards: keep the leaf replicated
        shardings["odd"], uneven_ok = NamedSharding(mesh, PartitionSpec()), False
    host_params, host_grads = tree_of(0), [tree_of(seed) for seed in range(1, 6)]
    sharded = lambda tree: jax.device_put(tree, shardings)  # noqa: E731
    single = lambda tree: jax.device_put(tree, devices[0])  # noqa: E731
    report = {"uneven_sharding_tested": uneven_ok, "optimizers": {}}
    for name, make in ALIASES.items():
        params, state, hlo = run(gx.grouped(make()), host_params, host_grads, sharded)
        ref_params, ref_state, _ = run(make(), host_params, host_grads, sharded)
        one_params, one_state, _ = run(make(), host_params, host_grads, single)
        view = gx.ungroup_state(state)
        moments = [
            tree
            for tree in jax.tree.leaves(view, is_leaf=lambda x: isinstance(x, dict))
            if isinstance(tree, dict) and set(tree) == set(SHAPES)
        ]
        report["optimizers"][name] = {
            "buffers": [
                str(b.sharding.spec) if isinstance(b.sharding, NamedSharding) else "single"
                for b in jax.tree.leaves(state)
                if b.ndim > 0
            ],
            "collectives": sorted(set(COLLECTIVES.findall(hlo))),
            "params_keep_sharding": keeps(params, shardings),
            "state_view_keeps_sharding": all(keeps(tree, shardings) for tree in moments),
            "param_shaped_state_trees": len(moments),
            "equal_to_ungrouped_sharded": same_bits((params, view), (ref_params, ref_state)),
            "equal_to_ungrouped_single_device": same_bits((params, view), (one_params, one_state)),
            "ulps_from_ungrouped_sharded": ulps((params, view), (ref_params, ref_state)),
            "ulps_from_single_device": ulps((params, view), (one_params, one_state)),
        }
    return report


def main():
    print(json.dumps(report()))


if __name__ == "__main__":
    main()
