"""gradxform inside an equinox training loop: an MLP on scikit-learn's digits.

    python examples/equinox_mlp.py

The optimizer sees only the model's floating-point arrays (``eqx.filter``);
``eqx.apply_updates`` puts the updates back into the model.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx
from gradxform.demo import load_digits, softmax_cross_entropy


def cross_entropy(model, x, y):
    return softmax_cross_entropy(jax.vmap(model)(x), y)


def main(steps: int = 300, batch_size: int = 128, seed: int = 0) -> dict:
    data = load_digits(seed=seed)
    model = eqx.nn.MLP(64, 10, 64, 1, activation=jnp.tanh, key=jax.random.PRNGKey(seed))
    tx = gx.chain(gx.clip_by_global_norm(1.0), gx.sgd(0.05, momentum=0.9, nesterov=True))
    state = tx.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def train_step(model, state, x, y):
        loss, grads = eqx.filter_value_and_grad(cross_entropy)(model, x, y)
        updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state, loss

    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        idx = rng.choice(data.x_train.shape[0], batch_size, replace=False)
        model, state, loss = train_step(model, state, data.x_train[idx], data.y_train[idx])
        losses.append(float(loss))
    accuracy = float(jnp.mean(jnp.argmax(jax.vmap(model)(data.x_test), -1) == data.y_test))
    return {"losses": losses, "test_accuracy": accuracy}


if __name__ == "__main__":
    print("equinox + clipped Nesterov: test accuracy", round(main()["test_accuracy"], 3))
