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
steps on a single device. Rows run in float32, or in float64 for a table built
as ``InFloat64({...})``.

Several tables run in one interpreter with ``--tables SPEC ... --out FILE``
(tests/helpers.py's ``sharded_report`` does this once per test session for every
table the session's test files name): the file holds ``{spec: {"report": ...}}``,
or ``{spec: {"error": traceback}}`` for a table that failed, so that one table's
failure fails only its own test. A spec may also name a function of no
arguments that returns a report (``tests.scripts.grouped_sharded_run:report``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import re
import traceback

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


class InFloat64(dict):
    """A table (``name -> factory``) whose rows run in float64: params, gradients and
    state, with x64 enabled for the table's run only.

    For optimizers whose float32 result is set by a conditioning that summation order
    can tip (an inverse root of a rank-deficient statistic): there sharded and
    one-device float32 runs differ by as much as float32 differs from float64, and the
    claim that sharding changes nothing is checked in float64 instead."""

    dtype = np.float64  # read by table_report (the class seen by ``-m`` is another object)


def params_and_grads(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    shapes = {"w1": (64, 24), "b1": (24,), "w2": (32, 8), "scale": (3,)}
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def state_has_param_shardings(state, shardings, host_params):
    """Whether every state leaf under a parameter's name, of its shape, has its sharding."""
    return all(
        leaf.sharding.is_equivalent_to(shardings[key], leaf.ndim)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
        for key in [str(getattr(path[-1], "key", ""))]
        if key in shardings and leaf.shape == host_params[key].shape
    )


def load_table(spec: str | None):
    """The optimizers to run: ``module:NAME`` names a dict of factories (or a function that
    returns a whole report), or the default."""
    if spec is None:
        return OPTIMIZERS
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def table_report(table: dict) -> dict:
    """Each row of ``table`` (``name -> factory``) run sharded and on one device, in
    float64 for an :class:`InFloat64` table, else in float32."""
    dtype = getattr(table, "dtype", np.float32)
    with jax.enable_x64(dtype == np.float64):
        return _rows_report(table, dtype)


def _rows_report(table: dict, dtype) -> dict:
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
    host_params = params_and_grads(0, dtype)
    host_grads = [params_and_grads(seed, dtype) for seed in range(1, 6)]
    report = {}
    for name, make in table.items():
        made = make()
        # a transform is itself a tuple (a NamedTuple): (tx, extra_args) is a pair ending in a dict
        tx, extra = made if isinstance(made, tuple) and isinstance(made[-1], dict) else (made, {})

        def step(params, grads, state, tx=tx, extra=extra):
            updates, state = tx.update(grads, state, params, **extra)
            return gx.apply_updates(params, updates), state

        # single device; the state committed to it as the params are (an uncommitted first
        # state and the committed one after a step would compile the step twice)
        params = jax.device_put(host_params, devices[0])
        state = jax.device_put(tx.init(params), devices[0])
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
        # the steps run the executable whose text is inspected (a jitted call would
        # compile the step again)
        compiled = sharded.lower(params, first_grads, state).compile()
        hlo = compiled.as_text()
        for g in host_grads:
            params, state = compiled(params, jax.device_put(g, shardings), state)
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
            "dtype": np.dtype(dtype).name,
        }
    return report


def report_for(spec: str | None) -> dict:
    """The report for one spec: its table's rows, or what its report function returns."""
    table = load_table(spec)
    return table_report(table) if isinstance(table, dict) else table()


def write_reports(specs: list[str], out: pathlib.Path) -> None:
    """Every spec's report (or the traceback of its failure) into ``out``, as JSON, the
    file rewritten as each spec is done (a test waits only for its own table)."""
    reports = {}
    for spec in specs:
        try:
            reports[spec] = {"report": report_for(spec)}
        except Exception:  # one table's failure is its own test's failure, not the others'
            reports[spec] = {"error": traceback.format_exc()}
        partial = out.with_name(out.name + ".partial")
        partial.write_text(json.dumps(reports))
        partial.replace(out)  # readers never see half a file


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", default=None, help="module:NAME of a dict of factories")
    parser.add_argument("--tables", nargs="+", help="several specs, reported into --out")
    parser.add_argument("--out", type=pathlib.Path, help="the JSON file for --tables")
    args = parser.parse_args()
    if args.tables:
        write_reports(args.tables, args.out)
    else:
        print(json.dumps(report_for(args.table)))


if __name__ == "__main__":
    main()
