"""A custom optimizer composed from gradxform's building blocks, in a dozen lines.

    python examples/custom_optimizer.py

"Clipped, centered RMSProp with Nesterov momentum, decoupled weight decay and a
warmup-cosine schedule": each clause is one block, and the chain is the algorithm.
The hyperparameters are declared once, in one store (``gx.Hyperparams``), and the
blocks get handles on them, so the state holds each name once (readable and
settable with ``gx.get_hyperparams`` / ``gx.set_hyperparams``) and one step count.
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
    hp = gx.Hyperparams(
        max_norm=1.0,
        decay=0.99,
        eps=1e-8,
        momentum=0.9,
        weight_decay=weight_decay,
        learning_rate=schedule,
    )
    return hp.chain(
        gx.clip_by_global_norm(hp["max_norm"]),  # bound the step when a batch is an outlier
        gx.scale_by_rms(hp["decay"], hp["eps"], centered=True),  # g / sqrt(Var[g] + eps)
        gx.scale_by_momentum(hp["momentum"], nesterov=True),  # Nesterov momentum, scaled g
        gx.add_decayed_weights(hp["weight_decay"]),  # decoupled (AdamW-style) weight decay
        gx.scale_by_learning_rate(hp["learning_rate"]),  # -lr(t) * ...
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
