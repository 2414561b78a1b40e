"""The main demo: one small MLP on scikit-learn's digits, trained by each optimizer.

``python -m gradxform demo`` (or the ``gradxform`` console script) trains the
same network from the same initialisation with SGD, momentum (both of the
lecture's formulations), Nesterov, AdaGrad, RMSProp, Adam, AdamW, AMSGrad and
NAdam, each as one jitted ``lax.scan`` over minibatch steps, and prints a table.
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx


class Digits(NamedTuple):
    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Digits:
    """The 1,797 8x8 digit images that ship inside scikit-learn, scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise SystemExit(
            "the demo needs scikit-learn's bundled digits data: pip install 'gradxform[demo]'"
        ) from err
    data = sk_load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Digits(*(jnp.asarray(a) for a in (x[train], y[train], x[test], y[test])))


def init_mlp(key: jax.Array, sizes=(64, 64, 10)) -> dict:
    """Glorot-uniform weights and zero biases for an MLP with the given layer sizes."""
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, sub = jax.random.split(key)
        limit = np.sqrt(6.0 / (n_in + n_out))
        params[f"layer{i}"] = {
            "w": jax.random.uniform(sub, (n_in, n_out), jnp.float32, -limit, limit),
            "b": jnp.zeros(n_out, jnp.float32),
        }
    return params


def mlp(params: dict, x: jax.Array) -> jax.Array:
    """Logits of a tanh MLP."""
    layers = [params[k] for k in sorted(params)]
    for layer in layers[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def cross_entropy(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = mlp(params, x)
    return jnp.mean(
        jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0]
    )


def accuracy(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(mlp(params, x), axis=-1) == y)


def make_train(tx: gx.GradientTransformation, data: Digits, steps: int, batch_size: int):
    """A jitted function ``(params, key) -> (params, losses)`` running ``steps`` updates."""
    n = data.x_train.shape[0]

    def step(carry, key):
        params, state = carry
        idx = jax.random.choice(key, n, (batch_size,), replace=False)
        loss, grads = jax.value_and_grad(cross_entropy)(
            params, data.x_train[idx], data.y_train[idx]
        )
        updates, state = tx.update(grads, state, params)
        return (gx.apply_updates(params, updates), state), loss

    @jax.jit
    def train(params, key):
        keys = jax.random.split(key, steps)
        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), keys)
        return params, losses

    return train


def optimizers(steps: int) -> dict[str, gx.GradientTransformation]:
    """The optimizers the demo compares, with usual learning rates for this problem."""
    return {
        "SGD": gx.sgd(0.5),
        "SGD+Momentum": gx.sgd(0.05, momentum=0.9),
        "Momentum (velocity form)": gx.sgd_velocity(0.05, momentum=0.9),
        "Nesterov": gx.sgd(0.05, momentum=0.9, nesterov=True),
        "AdaGrad": gx.adagrad(0.1),
        "RMSProp": gx.rmsprop(3e-3),
        "Adam": gx.adam(3e-3),
        "AdamW": gx.adamw(3e-3, weight_decay=1e-2),
        "AMSGrad": gx.amsgrad(3e-3),
        "NAdam": gx.nadam(3e-3),
    }


def run(steps: int = 300, batch_size: int = 128, seed: int = 0) -> list[dict]:
    """Trains every optimizer from the same start; returns one result row each."""
    data = load_digits(seed=seed)
    params0 = init_mlp(jax.random.PRNGKey(seed))
    key = jax.random.PRNGKey(seed + 1)
    rows = []
    for name, tx in optimizers(steps).items():
        train = make_train(tx, data, steps, batch_size)
        start = time.perf_counter()
        params, losses = jax.block_until_ready(train(params0, key))
        seconds = time.perf_counter() - start
        rows.append(
            {
                "optimizer": name,
                "train_loss": float(cross_entropy(params, data.x_train, data.y_train)),
                "test_accuracy": float(accuracy(params, data.x_test, data.y_test)),
                "last_batch_loss": float(losses[-1]),
                "seconds": seconds,
            }
        )
    return rows


def format_table(rows: list[dict], steps: int) -> str:
    header = f"{'optimizer':<26} {'train loss':>10} {'test acc':>9} {'time (s)':>9}"
    lines = [
        f"MLP 64-64-10 on scikit-learn digits, {steps} minibatch steps, jitted "
        f"(compile + run), backend {jax.default_backend()}",
        header,
        "-" * len(header),
    ]
    for r in rows:
        lines.append(
            f"{r['optimizer']:<26} {r['train_loss']:>10.4f} {r['test_accuracy']:>9.3f} "
            f"{r['seconds']:>9.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gradxform", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train an MLP on digits with every optimizer")
    demo.add_argument("--steps", type=int, default=300)
    demo.add_argument("--batch-size", type=int, default=128)
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be positive integers")
    rows = run(args.steps, args.batch_size, args.seed)
    print(format_table(rows, args.steps))
    return 0
