"""Hyperparameters live in the state: readable by name, changeable without recompiling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
GRADS = {"w": jnp.full((3, 2), 0.5), "b": jnp.array([1.0, -2.0])}


def make_step(tx):
    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    return step


def test_changing_learning_rate_does_not_recompile():
    tx = gx.adam(1e-2)
    step = make_step(tx)
    params, state = PARAMS, tx.init(PARAMS)
    params, state = step(params, state, GRADS)
    params, state = step(params, state, GRADS)
    state = gx.set_hyperparams(state, learning_rate=1e-4, b1=0.5)
    params, state = step(params, state, GRADS)
    assert step._cache_size() == 1
    assert float(gx.get_hyperparams(state)["learning_rate"]) == pytest.approx(1e-4)


def test_set_hyperparams_mid_run_equals_schedule():
    """5 steps at 0.1 then 5 at 0.01 via set_hyperparams == the same piecewise schedule."""
    tx = gx.sgd(0.1, momentum=0.9)
    step = make_step(tx)
    params, state = PARAMS, tx.init(PARAMS)
    for t in range(10):
        if t == 5:
            state = gx.set_hyperparams(state, learning_rate=0.01)
        params, state = step(params, state, GRADS)
    scheduled = gx.sgd(lambda t: jnp.where(t < 5, 0.1, 0.01), momentum=0.9)
    step2 = make_step(scheduled)
    params2, state2 = PARAMS, scheduled.init(PARAMS)
    for _ in range(10):
        params2, state2 = step2(params2, state2, GRADS)
    jax.tree.map(np.testing.assert_array_equal, params, params2)


def test_set_b1_changes_moment_and_bias_correction_together():
    state = gx.set_hyperparams(gx.adam(0.1).init(PARAMS), b1=0.5)
    b1_values = [
        float(node.values["b1"])
        for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, gx.HyperparamState))
        if isinstance(node, gx.HyperparamState) and "b1" in node.values
    ]
    assert b1_values == [0.5, 0.5]
    # and Adam with b1 = 0.5 from the start gives the same step
    u1, _ = gx.adam(0.1).update(GRADS, state, PARAMS)
    u2, _ = gx.adam(0.1, b1=0.5).update(GRADS, gx.adam(0.1, b1=0.5).init(PARAMS), PARAMS)
    jax.tree.map(np.testing.assert_array_equal, u1, u2)


def test_scheduled_values_are_readable_from_state():
    schedule = lambda t: 0.1 * 0.5**t  # noqa: E731
    tx = gx.adamw(schedule, b1=lambda t: 0.9 - 0.1 * jnp.minimum(t, 2), weight_decay=0.01)
    state = tx.init(PARAMS)
    assert float(gx.get_hyperparams(state)["learning_rate"]) == pytest.approx(0.1)
    for t in range(4):
        _, state = tx.update(GRADS, state, PARAMS)
        values = gx.get_hyperparams(state)
        assert float(values["learning_rate"]) == pytest.approx(schedule(t))  # used at update t
        assert float(values["b1"]) == pytest.approx(0.9 - 0.1 * min(t, 2))
    assert float(values["weight_decay"]) == pytest.approx(0.01)


def test_hyperparams_are_stored_in_float64_for_float64_params():
    with jax.enable_x64(True):
        state = gx.sgd(0.1).init(jnp.zeros(2, jnp.float64))
        assert gx.get_hyperparams(state)["learning_rate"].dtype == jnp.float64
    assert gx.get_hyperparams(gx.sgd(0.1).init(jnp.zeros(2)))["learning_rate"].dtype == jnp.float32


def test_complement_is_rounded_once():
    """1 - decay is float32(1 - 0.999), as optax and torch compute it, not 1 - float32(0.999)."""
    state = gx.ema_second_moment(0.999).init(jnp.zeros(1))
    values = gx.hyperparams.Values(state.hyperparams.values, state.hyperparams.residuals)
    assert values.complement("decay") == np.float32(1 - 0.999)
    assert np.float32(1) - np.float32(0.999) != np.float32(1 - 0.999)


def test_set_hyperparams_rejects_unknown_names_and_schedules():
    state = gx.adam(0.1).init(PARAMS)
    with pytest.raises(ValueError, match="'momentum' is not a hyperparameter.*learning_rate"):
        gx.set_hyperparams(state, momentum=0.9)
    with pytest.raises(TypeError, match="learning_rate must be a number"):
        gx.set_hyperparams(state, learning_rate=lambda t: 0.1)


@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda: gx.sgd(-0.1), "learning_rate"),
        (lambda: gx.sgd(0.1, momentum=1.0), "momentum"),
        (lambda: gx.sgd(0.1, momentum=-0.5), "momentum"),
        (lambda: gx.sgd(0.1, momentum=0.9, dampening=1.5), "dampening"),
        (lambda: gx.adam(0.1, b1=1.5), "b1"),
        (lambda: gx.adam(0.1, b2=-0.1), "b2"),
        (lambda: gx.adam(0.1, eps=-1e-8), "eps"),
        (lambda: gx.adam(0.1, eps_root=-1.0), "eps_root"),
        (lambda: gx.adamw(0.1, weight_decay=-1e-4), "weight_decay"),
        (lambda: gx.rmsprop(0.1, decay=1.0), "decay"),
        (lambda: gx.adagrad(0.1, initial_accumulator_value=-1.0), "initial_value"),
        (lambda: gx.clip(-1.0), "max_delta"),
        (lambda: gx.clip_by_global_norm(-1.0), "max_norm"),
        (lambda: gx.sgd(float("nan")), "learning_rate"),
        (lambda: gx.torch_compat.adagrad(lr_decay=-1.0), "lr_decay"),
    ],
)
def test_invalid_hyperparameters_raise_when_built(build, argument):
    with pytest.raises(ValueError, match=rf"^{argument} must"):
        build()


def test_wrong_types_raise_type_error_naming_argument():
    with pytest.raises(TypeError, match="learning_rate must be a real number"):
        gx.adam("fast")
    with pytest.raises(TypeError, match="schedule must be a function"):
        gx.scale_by_schedule(0.1)
    with pytest.raises(ValueError, match="chain: transforms"):
        gx.chain()
