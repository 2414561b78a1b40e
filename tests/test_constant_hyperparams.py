"""gx.constant_hyperparams: hyperparameters as compile-time constants, optax's program.

Oracles: the same optimizer with its hyperparameters as arrays (every update
bitwise, from the same state and gradients), optax's own state (the same
leaves: nothing but the count and the moments), a fresh build with the new
value (set_hyperparams), trace counts (a new value compiles once), and the
checkpoint written from the other layout.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from gradxform.hyperparams import Constant

RNG = np.random.default_rng(0)
PARAMS = {"w": jnp.asarray(RNG.standard_normal((6, 5)), jnp.float32), "b": jnp.zeros(5)}
STEPS = 6

# each optimizer optax also has (the update_step_gpt benchmark's pairs), and the wrapped forms
OPTIMIZERS = {
    "sgd_momentum": lambda: gx.sgd(0.1, 0.9, nesterov=True),
    "rmsprop": lambda: gx.rmsprop(0.01, centered=True, momentum=0.9),
    "adam": lambda: gx.adam(1e-2),
    "adamw": lambda: gx.adamw(1e-2, weight_decay=0.1),
    "nadamw": lambda: gx.nadamw(1e-2),
    "radam": lambda: gx.radam(1e-2),
    "adamax": lambda: gx.adamax(1e-2),
    "adabelief": lambda: gx.adabelief(1e-2),
    "yogi": lambda: gx.yogi(1e-2),
    "lion": lambda: gx.lion(1e-3),
    "lamb": lambda: gx.lamb(1e-2),
    "lars": lambda: gx.lars(1e-2),
    "adadelta": lambda: gx.adadelta(1.0),
    "rprop": lambda: gx.rprop(1e-2, lagged=True),
    "adopt": lambda: gx.adopt(1e-2),
    "adafactor": lambda: gx.adafactor(1e-2),
    "schedule_free_adamw": lambda: gx.schedule_free_adamw(1e-2, warmup_steps=3),
    "adam_scheduled": lambda: gx.adam(gx.schedules.cosine_decay(0.01, 10)),
    "apply_if_finite_adam": lambda: gx.apply_if_finite(gx.adam(1e-2), 3),
    "partition": lambda: gx.partition(
        {"a": gx.adamw(1e-2, weight_decay=0.1), "b": gx.sgd(0.1, 0.9)}, {"w": "a", "b": "b"}
    ),
}


def grads_at(k):
    rng = np.random.default_rng(100 + k)
    return jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), PARAMS)


def as_constant_state(tx_constant, state):
    """``state`` (arrays) read into the layout of ``tx_constant``'s state, via a checkpoint."""
    return gx.checkpoint.load_state_dict(tx_constant.init(PARAMS), gx.checkpoint.state_dict(state))


def assert_bitwise(a, b, ulps=0):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        if ulps == 0:
            assert np.array_equal(np.asarray(x), np.asarray(y))
        else:  # float32: the distance in units in the last place
            apart = np.asarray(x).view(np.int32).astype(np.int64) - np.asarray(y).view(np.int32)
            assert np.abs(apart).max() <= ulps


# Adafactor's literal learning rate: XLA regroups the product of the direction, the
# parameter scale and the rate once the rate is a constant (measured: 1 ulp on some
# elements; each other hyperparameter as a constant alone leaves the update bitwise)
ULPS = {"adafactor": 1}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_update_equals_the_array_form_bitwise(name):
    """From the same state and gradients, one jitted update of each form, at every step
    of the array form's run; the constant form's own run stays in its layout."""
    plain, constant = OPTIMIZERS[name](), gx.constant_hyperparams(OPTIMIZERS[name]())
    update_plain, update_constant = jax.jit(plain.update), jax.jit(constant.update)
    params, state = PARAMS, plain.init(PARAMS)
    for k in range(STEPS):
        grads = grads_at(k)
        ours, ours_state = update_constant(grads, as_constant_state(constant, state), params)
        updates, state = update_plain(grads, state, params)
        assert_bitwise(ours, updates, ULPS.get(name, 0))
        assert jax.tree.structure(ours_state) == jax.tree.structure(constant.init(PARAMS))
        assert_bitwise(gx.get_hyperparams(ours_state), gx.get_hyperparams(state))
        params = gx.apply_updates(params, updates)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: gx.adam(1e-2), lambda: optax.adam(1e-2)),
        (lambda: gx.rmsprop(1e-2), lambda: optax.rmsprop(1e-2)),
        (lambda: gx.adagrad(0.1), lambda: optax.adagrad(0.1)),
    ],
    ids=["adam", "rmsprop", "adagrad"],
)
def test_a_positive_constant_eps_drops_the_zero_guard_and_equals_optax_bitwise(ours, theirs):
    """``divide``'s guard ``where(den == 0, 0, n / d)`` is left out when eps is a positive
    constant (the denominator is at least eps or its root): the compiled update has no
    select. Without the guard's second read of the root, XLA computes RMSProp's and
    AdaGrad's ``g / sqrt(v + eps)`` as ``g * rsqrt(v + eps)``, optax's own expression, so
    these rows, a last bit apart from optax as arrays (tests/test_optax_parity.py's
    NOT_BITWISE), equal it bitwise as constants over 50 steps, as Adam does."""
    tx, ref = gx.constant_hyperparams(ours()), theirs()
    elementwise_select = re.compile(r"= f32\[\d[\d,]*\]\S* select\(")  # not the count's
    hlo = jax.jit(tx.update).lower(PARAMS, tx.init(PARAMS), PARAMS).compile().as_text()
    assert not elementwise_select.search(hlo)
    array_hlo = jax.jit(ours().update).lower(PARAMS, ours().init(PARAMS), PARAMS)
    assert elementwise_select.search(array_hlo.compile().as_text())  # the guard stays
    updates = {}
    for name, t in (("ours", tx), ("optax", ref)):
        update, state, params, out = jax.jit(t.update), t.init(PARAMS), PARAMS, []
        for k in range(50):
            u, state = update(grads_at(k), state, params)
            params = optax.apply_updates(params, u)
            out.append(u)
        updates[name] = out
    for a, b in zip(updates["ours"], updates["optax"]):
        assert_bitwise(a, b)


def test_adams_state_holds_what_optaxs_holds():
    """The count, mu and nu: no hyperparameter is an array of the state (optax's numbers are
    not either); a scheduled learning rate stays one, with its override flag."""
    ours = gx.constant_hyperparams(gx.adam(1e-3)).init(PARAMS)
    theirs = optax.adam(1e-3).init(PARAMS)
    shapes = sorted(np.shape(x) for x in jax.tree.leaves(ours))
    assert shapes == sorted(np.shape(x) for x in jax.tree.leaves(theirs))
    scheduled = gx.constant_hyperparams(gx.adam(gx.schedules.cosine_decay(0.01, 10)))
    stores = jax.tree.leaves(scheduled.init(PARAMS), is_leaf=lambda x: isinstance(x, Constant))
    held = [x for x in stores if isinstance(x, Constant)]
    assert len(held) == 4 + 2  # b1, b2, eps, eps_root and the complements of b1 and b2
    values = gx.get_hyperparams(scheduled.init(PARAMS))
    assert float(values["learning_rate"]) == np.float32(0.01)  # the schedule at step 0


@pytest.mark.parametrize(
    "make, change",
    [
        (lambda: gx.adam(1e-2), {"learning_rate": 1e-4, "b1": 0.5}),
        # centered: the zero guard stays (the array form's quotient, see below)
        (
            lambda: gx.apply_if_finite(gx.rmsprop(0.1, centered=True), 3),
            {"max_consecutive_skips": 7},
        ),
    ],
)
def test_a_set_value_is_used_and_compiles_once_per_value(make, change):
    """set_hyperparams on a constant state: the next update is a fresh build's with the
    value (bitwise, from the same moments); a jitted step traces once per distinct value."""
    traces = []
    tx = gx.constant_hyperparams(make())

    @jax.jit
    def step(params, state, grads):
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    params, state = step(PARAMS, tx.init(PARAMS), grads_at(0))
    changed = gx.set_hyperparams(state, **change)
    got, _ = step(params, changed, grads_at(1))
    assert len(traces) == 2
    step(params, gx.set_hyperparams(state, **change), grads_at(1))  # the same values again
    assert len(traces) == 2
    fresh = make()
    fresh_state = gx.set_hyperparams(
        gx.checkpoint.load_state_dict(fresh.init(PARAMS), gx.checkpoint.state_dict(state)),
        **change,
    )
    want = gx.apply_updates(params, jax.jit(fresh.update)(grads_at(1), fresh_state, params)[0])
    assert_bitwise(got, want)
    for name, value in change.items():
        assert float(gx.get_hyperparams(changed)[name]) == pytest.approx(value)


def test_set_values_are_checked_and_a_traced_one_is_refused():
    state = gx.constant_hyperparams(gx.adam(1e-2)).init(PARAMS)
    with pytest.raises(ValueError, match=r"b1 must be .*\[0, 1\)"):
        gx.set_hyperparams(state, b1=1.5)
    with pytest.raises(TypeError, match="learning_rate must be a concrete value.*constant"):
        jax.jit(lambda s, lr: gx.set_hyperparams(s, learning_rate=lr))(state, 0.1)


def test_init_under_jit_is_refused_by_name():
    tx = gx.constant_hyperparams(gx.adam(1e-2))
    with pytest.raises(TypeError, match="constant_hyperparams must be initialised outside jit"):
        jax.jit(tx.init)(PARAMS)


def test_checkpoints_carry_the_constants_both_ways(tmp_path):
    """A set constant is written and read back; a checkpoint of the array form restores
    into the constant form and back, with the values it holds."""
    constant, plain = gx.constant_hyperparams(gx.adam(1e-2)), gx.adam(1e-2)
    state = gx.set_hyperparams(constant.init(PARAMS), learning_rate=3e-4, b2=0.95)
    gx.checkpoint.save(tmp_path / "c.npz", state)
    back = gx.checkpoint.restore(tmp_path / "c.npz", like=constant.init(PARAMS))
    assert jax.tree.structure(back) == jax.tree.structure(state)  # the constants themselves
    as_arrays = gx.checkpoint.restore(tmp_path / "c.npz", like=plain.init(PARAMS))
    values = gx.get_hyperparams(as_arrays)
    assert float(values["learning_rate"]) == np.float32(3e-4)
    assert float(values["b2"]) == np.float32(0.95)
    gx.checkpoint.save(tmp_path / "p.npz", as_arrays)
    again = gx.checkpoint.restore(tmp_path / "p.npz", like=constant.init(PARAMS))
    assert jax.tree.structure(again) == jax.tree.structure(state)


def test_composes_with_grouped_and_optax_chains_both_ways():
    """Inside or around gx.grouped (one buffer per dtype), and inside an optax chain: the
    array form's updates bitwise, the constants settable and checkpointed."""
    grads = grads_at(0)
    forms = {
        "around_grouped": (gx.constant_hyperparams(gx.grouped(gx.adam(1e-2))), gx.grouped),
        "inside_grouped": (gx.grouped(gx.constant_hyperparams(gx.adam(1e-2))), gx.grouped),
        "in_optax_chain": (
            optax.chain(gx.constant_hyperparams(gx.adam(1e-2)), optax.clip(1.0)),
            lambda tx: optax.chain(tx, optax.clip(1.0)),
        ),
    }
    for name, (tx, wrap) in forms.items():
        plain = wrap(gx.adam(1e-2))
        ours, state = jax.jit(tx.update)(grads, tx.init(PARAMS), PARAMS)
        assert_bitwise(ours, jax.jit(plain.update)(grads, plain.init(PARAMS), PARAMS)[0])
        assert len(jax.tree.leaves(state)) < len(jax.tree.leaves(plain.init(PARAMS))), name
        state = gx.set_hyperparams(state, learning_rate=0.5)
        saved = gx.checkpoint.state_dict(state)
        back = gx.checkpoint.load_state_dict(tx.init(PARAMS), saved)
        assert float(gx.get_hyperparams(back)["learning_rate"]) == 0.5, name


def _entry(tx, apply):
    """The compiled step's ENTRY computation, names and metadata normalised away."""

    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return apply(p, updates), s

    text = jax.jit(step, donate_argnums=(0, 1)).lower(PARAMS, tx.init(PARAMS), PARAMS)
    text = text.compile().as_text()
    entry = text[text.index("ENTRY") :]
    entry = entry[: entry.index("\n}\n")]
    lines = [re.sub(r", metadata=\{[^}]*\}", "", ln) for ln in entry.splitlines() if " = " in ln]
    return [re.sub(r"%[\w.\-]+", "%", ln).strip() for ln in lines]


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: gx.adam(1e-3), lambda: optax.adam(1e-3)),
        (lambda: gx.adamw(1e-3, weight_decay=0.1), lambda: optax.adamw(1e-3, weight_decay=0.1)),
        (lambda: gx.rprop(1e-3, lagged=True), lambda: optax.rprop(1e-3)),
    ],
    ids=["adam", "adamw", "rprop"],
)
def test_the_compiled_step_is_optaxs_program(ours, theirs):
    """With constants, the jitted, donated training step compiles to optax's program: the
    ENTRY computation line for line (kernels, parameters, aliasing, order), names aside.
    This is what the GPT step benchmark times (docs/results/update_step_gpt_cpu.md); the
    array form has a scalar parameter per hyperparameter, and Adam's its zero guard."""
    got = _entry(gx.constant_hyperparams(ours()), gx.apply_updates)
    assert got == _entry(theirs(), optax.apply_updates)
    assert _entry(ours(), gx.apply_updates) != got
