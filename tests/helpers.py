"""JAX side of the shared problem: run any transform along the gradient sequence."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tests.problems import STEPS, grad, make_problem
from tests.reference.torch_configs import RECORD_EVERY


def problem(dtype, seed: int = 0, steps: int = STEPS):
    params, noise = make_problem(seed, steps)
    cast = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)  # noqa: E731
    return cast(params), cast(noise)


def trajectory(tx, dtype, steps: int = STEPS, every: int = RECORD_EVERY, apply=None):
    """Params every ``every`` steps of ``tx`` on the shared problem, one jitted scan.

    ``apply`` is the apply_updates to use (default: gradxform's).
    """
    import gradxform as gx

    apply = apply or gx.apply_updates
    params, noise = problem(dtype, steps=steps)

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
