"""Many transforms' trajectories on the shared problem, in one compiled program.

``trajectories`` is tests/helpers.py's ``trajectory`` for a table of transforms at
once: the same problem, the same gradients, the same steps, each transform carried
in its own slot of one jitted ``lax.scan``. A compile has a cost per program besides
its cost per operation: measured on this box, test_optimizers_classic's 16 optax-row
transforms (8 gradxform, 8 optax) compile and run in 9.9 s of CPU as one program
against 17.6 s as 16, with the same bits. The parity files build their tables once
per dtype (``functools.cache``) and their parametrized tests read their rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx
from tests.helpers import problem
from tests.problems import STEPS, grad
from tests.reference.torch_configs import RECORD_EVERY


def trajectories(
    rows: dict,
    dtype,
    steps: int = STEPS,
    every: int = RECORD_EVERY,
    *,
    seed: int = 0,
    shapes: dict | None = None,
) -> dict:
    """Params every ``every`` steps of each transform on the shared problem, NumPy.

    ``rows`` maps a name to ``(tx, apply)``: a transform and the apply_updates to
    use (None: gradxform's); ``seed`` and ``shapes`` choose the problem's instance
    (tests/problems.py). Returns name -> the params' leaves, ``(steps // every, ...)``.
    """
    names = list(rows)
    txs = [rows[name][0] for name in names]
    applies = [rows[name][1] or gx.apply_updates for name in names]
    params, noise = problem(dtype, seed, steps, shapes)

    def step(carry, noise_t):
        new = []
        for (x, state), tx, apply in zip(carry, txs, applies):
            g = jax.tree.map(lambda p, n: grad(p, n, jnp.cos), x, noise_t)
            updates, state = tx.update(g, state, x)
            new.append((apply(x, updates), state))
        return new, [x for x, _ in new]

    @jax.jit
    def run(params, noise):
        _, xs = jax.lax.scan(step, [(params, tx.init(params)) for tx in txs], noise)
        return [jax.tree.map(lambda a: a[every - 1 :: every], x) for x in xs]

    out = run(params, noise)
    return {name: jax.tree.map(np.asarray, x) for name, x in zip(names, out)}
