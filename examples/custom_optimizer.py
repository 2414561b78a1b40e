"""A custom optimizer composed from gradxform's building blocks, in ten lines.

    python examples/custom_optimizer.py

"Clipped, centered RMSProp with Nesterov momentum, decoupled weight decay and a
warmup-cosine schedule": each clause is one block, and the chain is the algorithm.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import gradxform as gx


def clipped_nesterov_rmsprop(peak_lr=1e-3, steps=1000, warmup=100, weight_decay=1e-4):
    schedule = gx.schedules.join(
        [gx.schedules.warmup(peak_lr, warmup), gx.schedules.cosine_decay(peak_lr, steps - warmup)],
        [warmup],
    )
    return gx.chain(
        gx.clip_by_global_norm(1.0),  # bound the step when a batch is an outlier
        gx.scale_by_rms(0.99, eps=1e-8, centered=True),  # g / sqrt(Var[g] + eps)
        gx.scale_by_momentum(0.9, nesterov=True),  # Nesterov momentum on the scaled gradient
        gx.add_decayed_weights(weight_decay),  # decoupled (AdamW-style) weight decay
        gx.scale_by_learning_rate(schedule),  # -lr(t) * ...
    )


def main(steps: int = 200) -> dict:
    def loss(p):  # Rosenbrock, in a pytree
        return (1 - p["x"]) ** 2 + 100 * (p["y"] - p["x"] ** 2) ** 2

    tx = clipped_nesterov_rmsprop(peak_lr=1e-2, steps=steps, warmup=10)
    params = {"x": jnp.array(-1.2), "y": jnp.array(1.0)}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return gx.apply_updates(params, updates), state

    start = float(loss(params))
    for _ in range(steps):
        params, state = step(params, state)
    return {"start": start, "final": float(loss(params)), "params": params}


if __name__ == "__main__":
    result = main()
    print(f"Rosenbrock loss {result['start']:.3f} -> {result['final']:.5f}")
