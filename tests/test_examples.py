"""The examples in examples/ run, learn, and mean what they say."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

EXAMPLES = pathlib.Path(__file__).parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # trains an MLP on digits with flax, then with equinox
@pytest.mark.parametrize("name", ["flax_mlp", "equinox_mlp"])
def test_framework_examples_learn_digits(name):
    result = load(name).main(steps=60, batch_size=64)
    losses = np.asarray(result["losses"])
    assert np.all(np.isfinite(losses)) and losses[-10:].mean() < 0.5 * losses[:5].mean()
    assert result["test_accuracy"] > 0.8  # chance is 0.1


def test_custom_optimizer_is_its_formula():
    example = load("custom_optimizer")
    tx = example.clipped_nesterov_rmsprop(peak_lr=0.1, steps=20, warmup=5, weight_decay=0.01)
    # the same algorithm, written out with optax's blocks as the oracle
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, 0.1, 5), optax.cosine_decay_schedule(0.1, 15)], [5]
    )
    reference = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.scale_by_stddev(0.99, eps=1e-8),  # centered RMSProp's scaling
        optax.trace(0.9, nesterov=True),
        optax.add_decayed_weights(0.01),
        optax.scale_by_learning_rate(schedule),
    )
    params = jnp.array([1.0, -2.0, 0.5])
    s_ours, s_ref = tx.init(params), reference.init(params)
    for t in range(12):
        g = jnp.sin(params * (t + 1)) + 0.1 * t
        u_ours, s_ours = tx.update(g, s_ours, params)
        u_ref, s_ref = reference.update(g, s_ref, params)
        np.testing.assert_allclose(u_ours, u_ref, rtol=2e-5, atol=1e-7, err_msg=f"step {t}")
        params = params + u_ours


def test_custom_optimizer_example_descends_rosenbrock():
    result = load("custom_optimizer").main(steps=200)
    assert result["final"] < 1e-2 * result["start"]
    assert jax.tree.structure(result["params"]) == jax.tree.structure({"x": 0, "y": 0})
