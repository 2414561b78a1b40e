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
import re
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

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


def replay_recorded_gradients(tx, record, config: str, keys) -> dict:
    """``tx`` fed a torch recording's gradients (``record[f"{config}/{k}/grads"]``) from its
    initial params, in one scan; per leaf ``k``: the per-step differences between our
    increments and torch's, and the size of torch's increments (both ``(steps, ...)``)."""
    p0 = {k: jnp.asarray(record[f"{config}/{k}/params"][0]) for k in keys}
    grads = {k: jnp.asarray(record[f"{config}/{k}/grads"]) for k in keys}

    def step(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p)
        p = gx.apply_updates(p, u)
        return (p, s), p

    traj = jax.jit(lambda p, g: jax.lax.scan(step, (p, tx.init(p)), g)[1])(p0, grads)
    out = {}
    for k in keys:
        ref = record[f"{config}/{k}/params"]
        ours = np.concatenate([ref[:1], np.asarray(traj[k])])
        out[k] = (
            np.abs(np.diff(ours, axis=0) - np.diff(ref, axis=0)),
            np.abs(np.diff(ref, axis=0)),
        )
    return out


def assert_checkpoint_resume_is_bitwise(step, init_state, params, noise, directory, split, stop):
    """Steps ``0..split-1`` with ``step(p, s, noise_t)``, saves params and state through
    ``gx.checkpoint``, then runs ``split..stop-1`` twice: straight on, and from the restored
    files (``init_state`` gives the state's structure); the two must agree bit for bit."""

    def advance(p, s, ts):
        for t in ts:
            p, s = step(p, s, {k: a[t] for k, a in noise.items()})
        return p, s

    # committed to the device from the start, as restored arrays are: a jitted step sees
    # one kind of argument and compiles once
    params, init_state = jax.device_put((params, init_state))
    p, s = advance(params, init_state, range(split))
    gx.checkpoint.save(directory / "p.npz", p)
    gx.checkpoint.save(directory / "s.npz", s)
    straight = advance(p, s, range(split, stop))
    p = gx.checkpoint.restore(directory / "p.npz", like=params)
    s = gx.checkpoint.restore(directory / "s.npz", like=init_state)
    resumed = advance(p, s, range(split, stop))
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)


def sharded_report(table: str) -> dict:
    """The tests/scripts/sharded_run.py report for ``table`` (``"module:NAME"``, a dict of
    factories in a test module): every row run on the 8-device CPU mesh and on one device.

    A test session runs every table its test files name (``sharded_tables``) once, in one
    8-device interpreter that tests/conftest.py starts in the background when the session
    starts (``start_sharded_reports``); this waits for that run's file. A table that run
    does not hold runs here, in a fresh interpreter of its own. A table whose run raised
    fails the test with the traceback.
    """
    if table not in _SHARDED_REPORTS:
        _SHARDED_REPORTS.update(_started_reports(table) or _run_tables([table]))
    entry = _SHARDED_REPORTS[table]
    assert "error" not in entry, f"{table} raised in its sharded run:\n{entry['error']}"
    return entry["report"]


ROOT = pathlib.Path(__file__).parents[1]
# the session's shared sharded run: a folder holding tables.json (what it runs), pid,
# stderr.txt and, once it is done, reports.json (tests/conftest.py sets this variable)
SHARDED_DIR = "GRADXFORM_TEST_SHARDED_DIR"
_SHARDED_CALL = re.compile(r"""sharded_report\(\s*["']([\w.]+:\w+)["']\s*\)""")
_SHARDED_REPORTS: dict = {}  # this process's reports, by table


def sharded_tables(paths) -> list[str]:
    """The tables that ``sharded_report("module:NAME")`` calls name in ``paths`` (test
    files, or folders searched for test_*.py), in order, each once."""
    files = []
    for path in map(pathlib.Path, paths):
        files += sorted(path.rglob("test_*.py")) if path.is_dir() else [path]
    found = [m for f in files if f.suffix == ".py" for m in _SHARDED_CALL.findall(f.read_text())]
    # the test modules' own tables first: tests/conftest.py runs the files that only read
    # the tests/scripts/ reports last
    return sorted(dict.fromkeys(found), key=lambda spec: spec.startswith("tests.scripts."))


def start_sharded_reports(tables: list[str], directory: pathlib.Path) -> subprocess.Popen:
    """Starts the one 8-device interpreter that writes every table's report (or its
    traceback) into ``directory/reports.json``; ``sharded_report`` reads it there."""
    (directory / "tables.json").write_text(json.dumps(tables))
    command = ["-m", "tests.scripts.sharded_run", "--tables", *tables]
    with open(directory / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, *command, "--out", str(directory / "reports.json")],
            cwd=ROOT,
            env=_eight_cpu_devices_env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    (directory / "pid").write_text(str(process.pid))
    return process


def _started_reports(table: str, timeout: float = 3600.0) -> dict | None:
    """The session's shared run's reports, once it holds ``table``'s; None where it does not run
    ``table`` (or no shared run was started). The timeout is generous: the run holds every
    table of the session, and shares two cores with the test workers."""
    directory = pathlib.Path(os.environ.get(SHARDED_DIR, "/nonexistent"))
    try:
        if table not in json.loads((directory / "tables.json").read_text()):
            return None
        pid = int((directory / "pid").read_text())
    except (OSError, ValueError):
        return None
    out, deadline = directory / "reports.json", time.monotonic() + timeout
    while True:  # the run rewrites its file (whole, by a rename) as each table is done
        alive = _alive(pid)
        reports = json.loads(out.read_text()) if out.exists() else {}
        if table in reports:
            return reports
        stderr = (directory / "stderr.txt").read_text()[-3000:]
        assert alive, f"the shared sharded run ended without {table}'s report:\n{stderr}"
        assert time.monotonic() < deadline, f"the shared sharded run timed out:\n{stderr}"
        time.sleep(0.5)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie, ended but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = pathlib.Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: trust os.kill


def _run_tables(tables: list[str]) -> dict:
    """Runs ``tables`` now, in a fresh 8-device interpreter; their entries by table."""
    with tempfile.TemporaryDirectory() as directory:
        out = pathlib.Path(directory) / "reports.json"
        _run_with_eight_cpu_devices(
            "-m", "tests.scripts.sharded_run", "--tables", *tables, "--out", str(out)
        )
        return json.loads(out.read_text())


def _eight_cpu_devices_env() -> dict:
    """This process's environment with 8 CPU devices for a fresh interpreter's jax."""
    return dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )


def run_on_eight_cpu_devices(*command: str) -> dict:
    """Runs ``python <command>`` from the repository root in a fresh interpreter with
    8 CPU devices (the device count is fixed when jax starts) and returns the JSON
    report its last line of output holds; a failed run fails the test with its stderr."""
    done = _run_with_eight_cpu_devices(*command)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_with_eight_cpu_devices(*command: str) -> subprocess.CompletedProcess:
    """``python <command>`` run to its end as run_on_eight_cpu_devices describes."""
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env=_eight_cpu_devices_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done
