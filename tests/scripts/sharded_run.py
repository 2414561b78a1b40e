"""Runs every elementwise optimizer on an 8-device CPU mesh; prints one JSON report.

Started by tests/test_sharding.py in a fresh interpreter, because the device
count is fixed when jax starts:
``XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.scripts.sharded_run``
from the repository root (it takes its optimizers from tests/helpers.py). Another
table of ``name -> factory`` runs instead with ``--table module:NAME``
(``python -m tests.scripts.sharded_run --table tests.test_partition:SHARDED``);
a factory may return ``(tx, extra_args)``, keyword arguments passed to every
``tx.update`` (``value=...`` for a transform that reads the loss).

Parameters are sharded FSDP-style (first axis over the mesh's one axis, one
small leaf replicated). For each optimizer the report says whether every
state leaf shaped like a parameter has that parameter's sharding, whether the
compiled step contains a collective, and the largest difference from the same
steps on a single device.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gradxform as gx
from tests.helpers import ALIASES, WRAPPED

# every alias and a scheduled one; not the clipped or guarded rows, whose global
# norm or finiteness check is a reduction over all shards
OPTIMIZERS = {**ALIASES, "adam_scheduled": WRAPPED["adam_scheduled"]}
COLLECTIVES = re.compile(r"all-gather|all-reduce|reduce-scatter|collective-permute|all-to-all")


def params_and_grads(seed):
    rng = np.random.default_rng(seed)
    shapes = {"w1": (64, 24), "b1": (24,), "w2": (32, 8), "scale": (3,)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def state_has_param_shardings(state, shardings, host_params):
    """Whether every state leaf under a parameter's name, of its shape, has its sharding."""
    return all(
        leaf.sharding.is_equivalent_to(shardings[key], leaf.ndim)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
        for key in [str(getattr(path[-1], "key", ""))]
        if key in shardings and leaf.shape == host_params[key].shape
    )


def load_table(spec: str | None) -> dict:
    """The optimizers to run: ``module:NAME`` names a dict of factories, or the default."""
    if spec is None:
        return OPTIMIZERS
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", default=None, help="module:NAME of a dict of factories")
    table = load_table(parser.parse_args().table)
    devices = np.array(jax.devices())
    assert devices.size == 8, devices
    mesh = Mesh(devices, ("fsdp",))
    specs = {
        "w1": PartitionSpec("fsdp"),
        "b1": PartitionSpec("fsdp"),
        "w2": PartitionSpec("fsdp"),
        "scale": PartitionSpec(),
    }
    shardings = {k: NamedSharding(mesh, s) for k, s in specs.items()}
    host_params = params_and_grads(0)
    host_grads = [params_and_grads(seed) for seed in range(1, 6)]
    report = {}
    for name, make in table.items():
        made = make()
        # a transform is itself a tuple (a NamedTuple): (tx, extra_args) is a pair ending in a dict
        tx, extra = made if isinstance(made, tuple) and isinstance(made[-1], dict) else (made, {})

        def step(params, grads, state, tx=tx, extra=extra):
            updates, state = tx.update(grads, state, params, **extra)
            return gx.apply_updates(params, updates), state

        # single device
        params = jax.device_put(host_params, devices[0])
        state = tx.init(params)
        single = jax.jit(step)
        for g in host_grads:
            params, state = single(params, jax.device_put(g, devices[0]), state)
        reference = params
        # sharded
        params = jax.device_put(host_params, shardings)
        state = tx.init(params)
        inherits = state_has_param_shardings(state, shardings, host_params)
        n_like_params = sum(
            1
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)
            if str(getattr(path[-1], "key", "")) in shardings and leaf.ndim > 0
        )
        sharded = jax.jit(step, donate_argnums=(0, 2))
        first_grads = jax.device_put(host_grads[0], shardings)
        hlo = sharded.lower(params, first_grads, state).compile().as_text()
        for g in host_grads:
            params, state = sharded(params, jax.device_put(g, shardings), state)
        kept = all(p.sharding.is_equivalent_to(shardings[k], p.ndim) for k, p in params.items())
        state_kept = state_has_param_shardings(state, shardings, host_params)
        diff = max(
            float(jnp.max(jnp.abs(np.asarray(params[k]) - np.asarray(reference[k]))))
            for k in params
        )
        bitwise = all(
            np.array_equal(np.asarray(params[k]), np.asarray(reference[k])) for k in params
        )
        report[name] = {
            "param_shaped_state_leaves": n_like_params,
            "state_inherits_sharding": inherits,
            "state_keeps_sharding_after_steps": state_kept,
            "params_keep_sharding": kept,
            "collectives": sorted(set(COLLECTIVES.findall(hlo))),
            "max_abs_diff": diff,
            "bitwise": bitwise,
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
