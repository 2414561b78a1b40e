"""gradxform optimizers in flax and equinox training loops, jitted.

Each loop is checked against the same loop driven by optax's optimizer of the
same name: the losses must match step for step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx

KEY = jax.random.PRNGKey(0)
X = jax.random.normal(KEY, (32, 4))
Y = jnp.sin(X @ jnp.array([1.0, -2.0, 0.5, 0.0]))[:, None]


@pytest.mark.slow  # imports and compiles a framework's training step
def test_flax_nnx_optimizer_loop():
    from flax import nnx

    def train(tx):
        model = nnx.Sequential(
            nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.tanh, nnx.Linear(8, 1, rngs=nnx.Rngs(1))
        )
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

        @nnx.jit
        def step(model, optimizer):
            loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(X) - Y) ** 2))(model)
            optimizer.update(model, grads)
            return loss

        return np.array([step(model, optimizer) for _ in range(20)])

    ours, theirs = train(gx.adam(1e-2)), train(optax.adam(1e-2))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert ours[-1] < 0.5 * ours[0]


def test_flax_linen_loop():
    import flax.linen as nn

    model = nn.Sequential([nn.Dense(8), nn.tanh, nn.Dense(1)])
    params0 = model.init(KEY, X)

    def train(tx):
        @jax.jit
        def step(params, state):
            loss, grads = jax.value_and_grad(lambda p: jnp.mean((model.apply(p, X) - Y) ** 2))(
                params
            )
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        params, state, losses = params0, tx.init(params0), []
        for _ in range(20):
            params, state, loss = step(params, state)
            losses.append(loss)
        return np.array(losses)

    ours, theirs = train(gx.sgd(0.1, 0.9, nesterov=True)), train(optax.sgd(0.1, 0.9, nesterov=True))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


@pytest.mark.slow  # imports and compiles a framework's training step
def test_equinox_loop():
    import equinox as eqx

    def train(tx):
        model = eqx.nn.MLP(4, 1, 8, 1, key=KEY)
        params = eqx.filter(model, eqx.is_inexact_array)
        state = tx.init(params)

        @eqx.filter_jit
        def step(model, state):
            loss, grads = eqx.filter_value_and_grad(lambda m: jnp.mean((jax.vmap(m)(X) - Y) ** 2))(
                model
            )
            updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
            return eqx.apply_updates(model, updates), state, loss

        losses = []
        for _ in range(20):
            model, state, loss = step(model, state)
            losses.append(loss)
        return np.array(losses)

    ours, theirs = (
        train(gx.adamw(1e-2, weight_decay=1e-3)),
        train(optax.adamw(1e-2, weight_decay=1e-3)),
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert ours[-1] < ours[0]
