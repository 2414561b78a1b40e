"""Shared test tables and the JAX side of the shared problem.

The optimizer tables are the one place tests (and tests/scripts/) name the
optimizers they sweep: ``name -> factory``, a fresh transform per call.

- ``ALIASES``: every first-order alias, once each, with its options exercised.
- ``WRAPPED``: first-order optimizers composed with a schedule, a clip or a guard.
- ``ELEMENTWISE``: both of the above (updates act leaf by leaf, so they shard
  without collectives and run in any floating dtype).
- ``SECOND_ORDER``: the transforms that need ``value``, ``grad`` and ``value_fn``.

Dense references and naive loops (the slow paths that pin the fast ones down)
live in tests/references.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp

import gradxform as gx
from tests.problems import STEPS, grad, make_problem
from tests.reference.torch_configs import RECORD_EVERY

ALIASES = {
    "sgd": lambda: gx.sgd(0.1),
    "sgd_momentum": lambda: gx.sgd(0.1, 0.9, dampening=0.1, weight_decay=1e-3),
    "sgd_nesterov": lambda: gx.sgd(0.1, 0.9, nesterov=True),
    "sgd_velocity": lambda: gx.sgd_velocity(0.1, 0.9),
    "adagrad": lambda: gx.adagrad(0.1),
    "rmsprop": lambda: gx.rmsprop(0.1, centered=True, momentum=0.9),
    "adam": lambda: gx.adam(0.1),
    "adamw": lambda: gx.adamw(0.1),
    "amsgrad": lambda: gx.amsgrad(0.1),
    "nadam": lambda: gx.nadam(0.1),
    "lion": lambda: gx.lion(0.01, weight_decay=0.1),
    "adamax": lambda: gx.adamax(0.1),
}

WRAPPED = {
    "adam_scheduled": lambda: gx.adam(gx.schedules.cosine_decay(0.01, 50)),
    "clipped_adam": lambda: gx.chain(gx.clip_by_global_norm(1.0), gx.adam(0.01)),
    "apply_if_finite_adam": lambda: gx.apply_if_finite(gx.adam(0.01)),
}

ELEMENTWISE = {**ALIASES, **WRAPPED}

SECOND_ORDER = {
    "lbfgs": lambda: gx.lbfgs(),
}


# the dtype matrix: every floating dtype a transform must run in, and how close each run
# must stay to the same run in float64 (complex128)
DTYPES = ["bfloat16", "float16", "float32", "float64", "complex64"]
TOLERANCE = {
    "bfloat16": 0.05,
    "float16": 5e-3,
    "float32": 1e-5,
    "float64": 1e-12,
    "complex64": 1e-5,
}


def assert_sharded_report(report: dict, names, max_abs_diff: float = 1e-6) -> None:
    """A tests/scripts/sharded_run.py report: every row ran, kept the params' shardings in
    its state and params, compiled no collective, and stayed within ``max_abs_diff`` of
    the same steps on one device."""
    assert set(report) == set(names)
    for name, row in report.items():
        assert row["param_shaped_state_leaves"] > 0, name
        assert row["state_inherits_sharding"], name
        assert row["state_keeps_sharding_after_steps"], name
        assert row["params_keep_sharding"], name
        assert row["collectives"] == [], (name, row["collectives"])
        assert row["max_abs_diff"] <= max_abs_diff, (name, row["max_abs_diff"])


def problem(dtype, seed: int = 0, steps: int = STEPS, shapes: dict | None = None):
    params, noise = make_problem(seed, steps, shapes)
    cast = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)  # noqa: E731
    return cast(params), cast(noise)


def trajectory(
    tx,
    dtype,
    steps: int = STEPS,
    every: int = RECORD_EVERY,
    apply=None,
    *,
    seed: int = 0,
    shapes: dict | None = None,
):
    """Params every ``every`` steps of ``tx`` on the shared problem, one jitted scan.

    ``apply`` is the apply_updates to use (default: gradxform's); ``seed`` and
    ``shapes`` choose another instance of the problem (tests/problems.py).
    """
    apply = apply or gx.apply_updates
    params, noise = problem(dtype, seed, steps, shapes)

    def step(carry, noise_t):
        x, state = carry
        g = jax.tree.map(lambda p, n: grad(p, n, jnp.cos), x, noise_t)
        updates, state = tx.update(g, state, x)
        x = apply(x, updates)
        return (x, state), x

    @jax.jit
    def run(params, noise):
        _, xs = jax.lax.scan(step, (params, tx.init(params)), noise)
        return jax.tree.map(lambda a: a[every - 1 :: every], xs)

    return run(params, noise)


def sharded_report(table: str) -> dict:
    """The tests/scripts/sharded_run.py report for ``table`` (``"module:NAME"``, a dict of
    factories in a test module): every row run on the 8-device CPU mesh and on one device."""
    return run_on_eight_cpu_devices("-m", "tests.scripts.sharded_run", "--table", table)


def run_on_eight_cpu_devices(*command: str) -> dict:
    """Runs ``python <command>`` from the repository root in a fresh interpreter with
    8 CPU devices (the device count is fixed when jax starts) and returns the JSON
    report its last line of output holds; a failed run fails the test with its stderr."""
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    done = subprocess.run(
        [sys.executable, *command],
        cwd=pathlib.Path(__file__).parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
