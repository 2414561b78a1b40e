"""gradxform inside a flax (nnx) training loop: an MLP on scikit-learn's digits.

    python examples/flax_mlp.py

``nnx.Optimizer`` takes any optax ``GradientTransformation``; every gradxform
optimizer is one, so it drops in where ``optax.adam`` would go.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

import gradxform as gx
from gradxform.demo import load_digits, softmax_cross_entropy


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 64, rngs=rngs)
        self.out = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def cross_entropy(model, x, y):
    return softmax_cross_entropy(model(x), y)


def main(steps: int = 300, batch_size: int = 128, seed: int = 0) -> dict:
    data = load_digits(seed=seed)
    model = MLP(nnx.Rngs(seed))
    schedule = gx.schedules.join(
        [gx.schedules.warmup(3e-3, 20), gx.schedules.cosine_decay(3e-3, max(steps - 20, 1))], [20]
    )
    optimizer = nnx.Optimizer(model, gx.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(cross_entropy)(model, x, y)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        idx = rng.choice(data.x_train.shape[0], batch_size, replace=False)
        losses.append(float(train_step(model, optimizer, data.x_train[idx], data.y_train[idx])))
    accuracy = float(jnp.mean(jnp.argmax(model(data.x_test), -1) == data.y_test))
    return {"losses": losses, "test_accuracy": accuracy}


if __name__ == "__main__":
    result = main()
    print(
        f"flax nnx + gx.adamw: final minibatch loss {result['losses'][-1]:.4f}, "
        f"test accuracy {result['test_accuracy']:.3f}"
    )
