"""Hyperparameters live in the state, each name in one place: readable, settable, no recompiling.

Oracles: a freshly built optimizer with the new value (set_hyperparams,
tree_set, a value set over a schedule), the schedule that does the same
(mid-run changes), the constructors' own errors (checks on set), closed forms
(complements, derivatives, RMSProp's and AdaGrad's eps) and trace counts
(recompilation).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx

PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
GRADS = {"w": jnp.full((3, 2), 0.5), "b": jnp.array([1.0, -2.0])}
X = jnp.array([0.5, -1.0, 2.0])  # small problem for the per-name tables


def torch_preset(name, **renamed):
    """A torch_compat preset that takes the state's names (learning_rate, b1, b2, decay)."""

    def build(learning_rate=1e-2, b1=0.9, b2=0.999, decay=None, **kwargs):
        if name in ("adam", "adamw"):
            kwargs["betas"] = (b1, b2)
        if decay is not None:
            kwargs["alpha"] = decay
        return getattr(gx.torch_compat, name)(lr=learning_rate, **{**renamed, **kwargs})

    return build


def guarded_adam(max_consecutive_skips=5, **kwargs):
    return gx.apply_if_finite(gx.adam(**kwargs), max_consecutive_skips)


# row -> (factory taking the state's hyperparameter names as keywords, its arguments)
ALIASES = {
    "sgd": (gx.sgd, {"learning_rate": 0.05}),
    "sgd_momentum_dampening_l2": (
        gx.sgd,
        {"learning_rate": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-3},
    ),
    "sgd_nesterov": (gx.sgd, {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
    "sgd_velocity": (gx.sgd_velocity, {"learning_rate": 0.05, "momentum": 0.9}),
    "adagrad": (gx.adagrad, {"learning_rate": 0.1}),
    "rmsprop": (gx.rmsprop, {"learning_rate": 0.01}),
    "rmsprop_centered_momentum": (
        gx.rmsprop,
        {"learning_rate": 0.01, "centered": True, "momentum": 0.9},
    ),
    "rmsprop_eps_outside": (gx.rmsprop, {"learning_rate": 0.01, "eps_in_sqrt": False}),
    "adam": (gx.adam, {"learning_rate": 0.01, "eps_root": 1e-8}),
    "adamw": (gx.adamw, {"learning_rate": 0.01, "weight_decay": 0.1}),
    "amsgrad": (gx.amsgrad, {"learning_rate": 0.01}),
    "nadam": (gx.nadam, {"learning_rate": 0.01}),
    "apply_if_finite_adam": (guarded_adam, {"learning_rate": 0.01}),
    "torch_sgd": (
        torch_preset("sgd"),
        {"learning_rate": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
    ),
    "torch_adagrad": (
        torch_preset("adagrad"),
        {"learning_rate": 0.1, "weight_decay": 0.01, "eps": 1e-6},
    ),
    "torch_rmsprop": (
        torch_preset("rmsprop"),
        {"learning_rate": 0.01, "momentum": 0.9, "weight_decay": 0.01, "centered": True},
    ),
    "torch_adam": (torch_preset("adam"), {"weight_decay": 0.01, "amsgrad": True}),
    "torch_adamw": (torch_preset("adamw"), {"amsgrad": True}),
}

NEW = {
    "learning_rate": 0.03,
    "b1": 0.7,
    "b2": 0.95,
    "eps": 1e-3,
    "eps_root": 1e-6,
    "decay": 0.8,
    "momentum": 0.6,
    "dampening": 0.3,
    "weight_decay": 0.05,
    "max_consecutive_skips": 2,
}

# The fast loop runs these rows; the full suite runs every row (the tables take ~20 s).
FAST = {"sgd_momentum_dampening_l2", "rmsprop_centered_momentum", "adam", "torch_adam"}


def row_param(row, *values):
    marks = () if row in FAST else (pytest.mark.slow,)
    return pytest.param(row, *values, marks=marks, id="-".join([row, *values]))


PAIRS = [
    row_param(row, name)
    for row, (make, kwargs) in ALIASES.items()
    for name in gx.get_hyperparams(make(**kwargs).init(X))
]


def two_steps(tx, state):
    """Updates and state after two steps on a fixed gradient sequence (eager)."""
    out = []
    for k in range(2):
        grads = 1e-3 * (jnp.sin(X + k) + 0.3)  # small: eps and eps_root show in the steps
        updates, state = tx.update(grads, state, X)
        out.append(updates)
    return out, state


def assert_bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


def test_every_alias_has_names_to_set():
    assert {pair.values[1] for pair in PAIRS} == set(NEW)
    assert len(PAIRS) > 60


@pytest.mark.parametrize("row, name", PAIRS)
def test_set_hyperparams_equals_a_fresh_build(row, name):
    """Setting a name sets every use of it: the next updates are bitwise those of a fresh build."""
    make, kwargs = ALIASES[row]
    state = gx.set_hyperparams(make(**kwargs).init(X), **{name: NEW[name]})
    fresh = make(**{**kwargs, name: NEW[name]})
    assert_bitwise(state, fresh.init(X))
    assert_bitwise(two_steps(make(**kwargs), state), two_steps(fresh, fresh.init(X)))


@pytest.mark.parametrize("row, name", PAIRS)
def test_optax_tree_get_and_tree_set(row, name):
    """Each name is a key in one place; tree_set's value is used as an array-built one would be."""
    make, kwargs = ALIASES[row]
    state = make(**kwargs).init(X)
    assert len(optax.tree_utils.tree_get_all_with_path(state, name)) == 1
    value = optax.tree_utils.tree_get(state, name)
    assert value is gx.get_hyperparams(state)[name]
    new = jnp.asarray(NEW[name], value.dtype)
    state = optax.tree_utils.tree_set(state, **{name: new})  # a decay's complement left behind
    fresh = make(**{**kwargs, name: new})  # an array: its complement is 1 - value, computed
    (ours, state), (theirs, fresh_state) = (
        two_steps(make(**kwargs), state),
        two_steps(fresh, fresh.init(X)),
    )
    assert_bitwise(ours, theirs)
    assert_bitwise(gx.get_hyperparams(state), gx.get_hyperparams(fresh_state))


def nudged(path, leaf):
    """A different value that the state may hold: the count + 1, a complement 2 ulps up
    (still agreeing with its decay), any other value doubled (0 -> 1e-3)."""
    if leaf.dtype == jnp.int32:
        return leaf + 1
    if "one_minus" in jax.tree_util.keystr(path):
        return jnp.nextafter(jnp.nextafter(leaf, 2), 2)
    return jnp.where(leaf == 0, jnp.asarray(1e-3, leaf.dtype), 2 * leaf)


@pytest.mark.parametrize(
    "row", [row_param(row) for row in sorted(ALIASES) if row != "apply_if_finite_adam"]
)
def test_every_scalar_in_the_state_is_read(row):
    """Changing any scalar of an optimizer's state (value, complement, count) changes a step.

    A decay is changed with its complement (as set_hyperparams does): dampening is read
    only through ``1 - dampening``."""
    make, kwargs = ALIASES[row]
    tx = make(**kwargs)
    state = tx.init(X)
    reference, _ = two_steps(tx, state)
    with_paths, structure = jax.tree_util.tree_flatten_with_path(state)
    leaves = [leaf for _, leaf in with_paths]
    where = {jax.tree_util.keystr(path): i for i, (path, _) in enumerate(with_paths)}
    for i, (path, leaf) in enumerate(with_paths):
        if leaf.ndim:
            continue
        changed_leaves = [*leaves[:i], nudged(path, leaf), *leaves[i + 1 :]]
        key = jax.tree_util.keystr(path)
        complement = key.replace(".values['", ".complements['one_minus_")
        if complement != key and complement in where:  # a decay is set with its complement
            changed_leaves[i] = leaf / 2
            changed_leaves[where[complement]] = 1 - leaf / 2
        state_i = jax.tree.unflatten(structure, changed_leaves)
        updates, _ = two_steps(tx, state_i)
        changed = any(not np.array_equal(a, b) for a, b in zip(updates, reference))
        assert changed, f"{row}: nothing reads {jax.tree_util.keystr(path)}"


def test_one_count_and_each_name_once_in_adam():
    state = gx.adam(1e-3).init(PARAMS)
    leaves = jax.tree.leaves(state)
    assert sum(x.dtype == jnp.int32 for x in leaves) == 1
    # one count, five hyperparameters, the complements of b1 and b2, and m and v
    assert len(leaves) == 1 + 5 + 2 + 2 * len(PARAMS)
    assert float(optax.tree_utils.tree_get(state, "learning_rate")) == np.float32(1e-3)


def test_stores_keep_a_count_only_when_an_update_reads_it():
    def counts(tx):  # int32 leaves other than a schedule's clamp counter
        leaves = jax.tree_util.tree_leaves_with_path(tx.init(PARAMS))
        return sum(
            x.dtype == jnp.int32 and not jax.tree_util.keystr(p).endswith("_clamped']")
            for p, x in leaves
        )

    assert counts(gx.sgd(0.1, momentum=0.9)) == counts(gx.rmsprop(0.1)) == 0
    assert counts(gx.sgd(0.1, 0.9, dampening=0.1)) == 1  # torch's undampened first step
    assert counts(gx.sgd(gx.schedules.cosine_decay(0.1, 10))) == 1
    assert counts(gx.nadam(0.1)) == counts(gx.amsgrad(0.1)) == 1


def make_counted_step(tx):
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    return step, traces


@pytest.mark.parametrize(
    "make, change",
    [
        (lambda: gx.adam(1e-2), {"learning_rate": 1e-4, "b1": 0.5, "eps": 1e-3}),
        (lambda: gx.sgd(0.1, 0.9, dampening=0.2), {"momentum": 0.5, "dampening": 0.0}),
        (lambda: gx.apply_if_finite(gx.rmsprop(0.1), 3), {"max_consecutive_skips": 7}),
    ],
)
def test_setting_hyperparameters_does_not_retrace(make, change):
    step, traces = make_counted_step(make())
    params, state = step(PARAMS, make().init(PARAMS), GRADS)
    state = gx.set_hyperparams(state, **change)
    params, state = step(params, state, GRADS)
    name, value = next(iter(change.items()))
    state = optax.tree_utils.tree_set(state, **{name: jnp.asarray(value, state_dtype(state, name))})
    params, state = step(params, state, GRADS)
    assert len(traces) == 1
    for name, value in change.items():
        assert float(gx.get_hyperparams(state)[name]) == pytest.approx(value)


def state_dtype(state, name):
    return gx.get_hyperparams(state)[name].dtype


def test_max_consecutive_skips_is_a_hyperparameter():
    tx = gx.apply_if_finite(gx.sgd(0.1), max_consecutive_skips=5)
    update = jax.jit(tx.update)
    nan = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), PARAMS)
    state = tx.init(PARAMS)
    assert int(optax.tree_utils.tree_get(state, "max_consecutive_skips")) == 5
    _, state = update(nan, state, PARAMS)
    jax.block_until_ready(update(nan, state, PARAMS))  # 2 < 5: skips on
    state = gx.set_hyperparams(state, max_consecutive_skips=2)
    with pytest.raises(Exception, match="2 steps in a row had NaN"):
        jax.block_until_ready(update(nan, state, PARAMS))
    with pytest.raises(TypeError, match="max_consecutive_skips must be an integer"):
        gx.set_hyperparams(state, max_consecutive_skips=2.5)


def test_set_hyperparams_mid_run_equals_schedule():
    """5 steps at 0.1 then 5 at 0.01 via set_hyperparams == the same piecewise schedule."""
    tx = gx.sgd(0.1, momentum=0.9)
    step, _ = make_counted_step(tx)
    params, state = PARAMS, tx.init(PARAMS)
    for t in range(10):
        if t == 5:
            state = gx.set_hyperparams(state, learning_rate=0.01)
        params, state = step(params, state, GRADS)
    scheduled = gx.sgd(lambda t: jnp.where(t < 5, 0.1, 0.01), momentum=0.9)
    step2, _ = make_counted_step(scheduled)
    params2, state2 = PARAMS, scheduled.init(PARAMS)
    for _ in range(10):
        params2, state2 = step2(params2, state2, GRADS)
    jax.tree.map(np.testing.assert_array_equal, params, params2)


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
    assert state.hyperparams.complements["one_minus_decay"] == np.float32(1 - 0.999)
    assert np.float32(1) - np.float32(0.999) != np.float32(1 - 0.999)
    state = gx.set_hyperparams(state, decay=0.99)
    assert state.hyperparams.complements["one_minus_decay"] == np.float32(1 - 0.99)


def test_derivative_with_respect_to_a_decay_flows_through_its_complement():
    """m_1 = (1 - b) g, so dm_1/db = -g: set_hyperparams sets the complement 1 - b from b."""
    tx = gx.ema_first_moment(0.9)
    g = jnp.array([2.0, -1.0])

    def first_moment(b):
        return tx.update(g, gx.set_hyperparams(tx.init(g), decay=b))[0]

    for b in (jnp.float32(0.9), jnp.float32(0.5)):
        np.testing.assert_allclose(jax.jit(jax.jacfwd(first_moment))(b), -g)
        np.testing.assert_allclose(jax.jacrev(first_moment)(b), -g)
        np.testing.assert_allclose(first_moment(b), (1 - b) * g, rtol=1e-6)


def test_a_decay_written_alone_is_read_with_its_own_complement():
    """tree_set of a decay alone leaves the stored complement behind: the update sees that the
    complement no longer belongs to the value and uses 1 - value; a schedule's is 1 - value."""
    tx = gx.ema_first_moment(0.9)
    g = jnp.array([2.0, -1.0])
    state = optax.tree_utils.tree_set(tx.init(g), decay=jnp.float32(0.5))
    np.testing.assert_array_equal(jax.jit(tx.update)(g, state)[0], 0.5 * g)
    np.testing.assert_array_equal(tx.update(g, state)[0], 0.5 * g)
    state = gx.set_hyperparams(tx.init(g), decay=0.999)  # the stored complement, rounded once
    np.testing.assert_array_equal(tx.update(g, state)[0], np.float32(1 - 0.999) * g)
    scheduled = gx.ema_first_moment(lambda t: 0.5 + 0.1 * t)  # 1 - value, every update
    state = scheduled.init(g)
    for t in range(3):
        out, state = scheduled.update(g, state)
        decay = np.float32(0.5 + 0.1 * t)
        np.testing.assert_array_equal(state.hyperparams.complements["one_minus_decay"], 1 - decay)


def test_one_store_shared_by_handles():
    hp = gx.Hyperparams(learning_rate=0.1, decay=0.5)
    tx = hp.chain(
        gx.ema_first_moment(hp["decay"]),
        gx.bias_correct(hp["decay"]),
        gx.scale_by_learning_rate(hp["learning_rate"]),
    )
    state = tx.init(jnp.zeros(1))
    assert isinstance(state, gx.HyperparamChainState)
    assert int(state.hyperparams.count) == 0  # bias_correct reads the count
    assert jax.tree.leaves(state.inner_state[1]) == []  # the correction stores nothing
    u, state = tx.update(jnp.array([4.0]), state)
    np.testing.assert_allclose(u, [-0.4])  # -lr * (1 - b) g / (1 - b)
    with pytest.raises(LookupError, match="'decay' is read outside its store"):
        lone = gx.bias_correct(hp["decay"])
        lone.update(jnp.ones(1), lone.init(jnp.zeros(1)))


def test_set_hyperparams_rejects_unknown_names_and_schedules():
    state = gx.adam(0.1).init(PARAMS)
    with pytest.raises(ValueError, match="momentum must be a hyperparameter of this state.*eps"):
        gx.set_hyperparams(state, momentum=0.9)
    with pytest.raises(TypeError, match="learning_rate must be a number or a scalar array"):
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
        (lambda: gx.apply_if_finite(gx.sgd(0.1), 0), "max_consecutive_skips"),
        (lambda: gx.sgd(lambda t: jnp.nan * t), "learning_rate"),
    ],
)
def test_invalid_hyperparameters_raise_when_built(build, argument):
    with pytest.raises(ValueError, match=rf"^{argument} must be .*; got "):
        build()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: gx.adam("fast"), "learning_rate must be a real number, a real scalar array or"),
        (lambda: gx.sgd(jnp.ones(2)), "learning_rate must be a real number"),
        (lambda: gx.adam(0.1, b1=True), "b1 must be a real number"),
        (lambda: gx.scale_by_schedule(0.1), "schedule must be a callable"),
        (lambda: gx.adam(lambda t: jnp.ones(3)), "learning_rate must be a schedule returning"),
        (lambda: gx.apply_if_finite(gx.sgd(0.1), True), "max_consecutive_skips must be an"),
        (lambda: gx.chain(), "chain: transforms"),
    ],
)
def test_wrong_types_raise_type_error_naming_argument(build, message):
    with pytest.raises((TypeError, ValueError), match=message):
        build()


# --- a value set on a scheduled hyperparameter, checks on set, the names read and set ---------


def halving(t):
    """0.1 * 0.5**t, written out (the schedule the tests below set over)."""
    return 0.1 * 0.5 ** jnp.asarray(t, jnp.float32)


def test_a_value_set_on_a_schedule_replaces_it_until_cleared():
    """Set lr=0 on a scheduled Adam: the params stay put (jitted, no retrace); None hands the
    learning rate back to the schedule, at the count it would have reached anyway."""
    tx = gx.adam(halving)
    step, traces = make_counted_step(tx)
    params, state = step(PARAMS, tx.init(PARAMS), GRADS)
    state = gx.set_hyperparams(state, learning_rate=0.0)
    frozen = params
    for _ in range(3):
        params, state = step(params, state, GRADS)
        assert float(gx.get_hyperparams(state)["learning_rate"]) == 0.0
    jax.tree.map(np.testing.assert_array_equal, params, frozen)
    assert bool(optax.tree_utils.tree_get(state, "learning_rate_is_set"))
    state = gx.set_hyperparams(state, learning_rate=None)
    params, state = step(params, state, GRADS)  # update 4 (0-based): the schedule's value
    assert float(gx.get_hyperparams(state)["learning_rate"]) == pytest.approx(0.1 * 0.5**4)
    assert not np.array_equal(params["w"], frozen["w"])
    assert len(traces) == 1


@pytest.mark.parametrize(
    "make, name, value",
    [
        (lambda v: gx.sgd(v), "learning_rate", 0.03),
        (lambda v: gx.adam(0.01, b1=v), "b1", 0.5),  # a decay: its complement is set too
        (lambda v: gx.sgd(0.1, momentum=0.9, dampening=v), "dampening", 0.3),
    ],
)
def test_a_value_set_on_a_schedule_steps_as_a_build_with_that_value(make, name, value):
    scheduled = make(lambda t: 0.2 / (1 + jnp.asarray(t, jnp.float32)))
    state = gx.set_hyperparams(scheduled.init(X), **{name: value})
    fresh = make(value)
    ours, state = two_steps(scheduled, state)
    assert_bitwise(ours, two_steps(fresh, fresh.init(X))[0])
    assert float(gx.get_hyperparams(state)[name]) == np.float32(value)


def test_tree_set_of_value_and_flag_overrides_a_schedule():
    tx = gx.sgd(halving)
    state = optax.tree_utils.tree_set(
        tx.init(X), learning_rate=jnp.float32(0.03), learning_rate_is_set=jnp.asarray(True)
    )
    fresh = gx.sgd(0.03)
    assert_bitwise(two_steps(tx, state)[0], two_steps(fresh, fresh.init(X))[0])


def test_clearing_needs_a_scheduled_hyperparameter():
    with pytest.raises(ValueError, match="^learning_rate must be a number .*not scheduled"):
        gx.set_hyperparams(gx.sgd(0.1).init(X), learning_rate=None)


@pytest.mark.parametrize(
    "make, kwargs, name, bad",
    [
        (gx.sgd, {"learning_rate": 0.1}, "learning_rate", -1.0),
        (gx.adam, {"learning_rate": 0.1}, "b1", 1.5),
        (gx.adam, {"learning_rate": 0.1}, "learning_rate", float("nan")),
        (gx.adam, {"learning_rate": 0.1}, "b2", jnp.asarray(1.0)),
        (gx.adam, {"learning_rate": 0.1}, "eps", -1e-8),
        (gx.sgd, {"learning_rate": 0.1, "momentum": 0.9}, "momentum", 1.0),
        (gx.sgd, {"learning_rate": 0.1, "momentum": 0.9, "dampening": 0.1}, "dampening", 1.5),
        (gx.rmsprop, {"learning_rate": 0.1}, "decay", -0.1),
        (gx.adamw, {"learning_rate": 0.1}, "weight_decay", -1e-4),
        (guarded_adam, {"learning_rate": 0.1}, "max_consecutive_skips", 0),
        (gx.adam, {"learning_rate": halving}, "learning_rate", -1.0),  # set on a schedule
    ],
)
def test_set_hyperparams_checks_values_as_the_constructor_does(make, kwargs, name, bad):
    """The error on set is the constructor's, word for word."""
    with pytest.raises(ValueError) as built:
        make(**{**kwargs, name: bad})
    state = make(**kwargs).init(X)
    with pytest.raises(ValueError) as on_set:
        gx.set_hyperparams(state, **{name: bad})
    assert str(on_set.value) == str(built.value)
    assert str(on_set.value).startswith(f"{name} must be ")


def test_set_hyperparams_cannot_check_a_traced_value():
    """Inside jit the value is unknown: it is stored unchecked (as documented)."""
    state = gx.sgd(0.1).init(X)
    state = jax.jit(lambda s, v: gx.set_hyperparams(s, learning_rate=v))(state, -1.0)
    assert float(gx.get_hyperparams(state)["learning_rate"]) == -1.0


EPS_G = np.array([0.3, -1.2, 0.05])


@pytest.mark.parametrize(
    "make, accumulate, inside",
    [
        (lambda eps: gx.rmsprop(0.1, decay=0.75, eps=eps), lambda g2: 0.25 * g2, True),
        (
            lambda eps: gx.rmsprop(0.1, decay=0.75, eps=eps, eps_in_sqrt=False),
            lambda g2: 0.25 * g2,
            False,
        ),
        (lambda eps: gx.adagrad(0.1, 0.2, eps=eps), lambda g2: 0.2 + g2, True),
        (lambda eps: gx.adagrad(0.1, 0.2, eps=eps, eps_in_sqrt=False), lambda g2: 0.2 + g2, False),
        (lambda eps: gx.torch_compat.rmsprop(0.1, 0.75, eps=eps), lambda g2: 0.25 * g2, False),
        (
            lambda eps: gx.torch_compat.adagrad(0.1, initial_accumulator_value=0.2, eps=eps),
            lambda g2: 0.2 + g2,
            False,
        ),
    ],
    ids=["rmsprop", "rmsprop_outside", "adagrad", "adagrad_outside", "torch_rms", "torch_ada"],
)
def test_eps_is_read_and_set_under_the_name_given(make, accumulate, inside):
    """get_hyperparams shows the eps passed, under 'eps'; setting 'eps' changes that term
    (checked against the formula, in float64 NumPy)."""
    state = make(1e-6).init(jnp.zeros(3))
    values = gx.get_hyperparams(state)
    assert "eps_root" not in values and values["eps"] == np.float32(1e-6)
    state = gx.set_hyperparams(state, eps=0.5)
    updates, _ = make(1e-6).update(jnp.asarray(EPS_G, jnp.float32), state)
    acc = accumulate(EPS_G**2)
    denominator = np.sqrt(acc + 0.5) if inside else np.sqrt(acc) + 0.5
    np.testing.assert_allclose(updates, -0.1 * EPS_G / denominator, rtol=1e-6)


# every alias with a weight decay, built with the decay given: name -> weight_decay -> tx
WEIGHT_DECAYED = {
    "sgd": lambda wd: gx.sgd(0.1, 0.9, weight_decay=wd),
    "adamw": lambda wd: gx.adamw(0.1, weight_decay=wd),
    "lamb": lambda wd: gx.lamb(0.1, weight_decay=wd),
    "lars": lambda wd: gx.lars(0.1, weight_decay=wd),
    "adadelta": lambda wd: gx.adadelta(0.1, weight_decay=wd),
    "nadam_momentum_decay": lambda wd: gx.nadam_momentum_decay(0.1, weight_decay=wd),
    "adafactor_torch": lambda wd: gx.adafactor_torch(0.1, weight_decay=wd),
    "muon": lambda wd: gx.muon(0.1, weight_decay=wd, adam_weight_decay=wd),
    "soap": lambda wd: gx.soap(0.1, weight_decay=wd),
    "lion": lambda wd: gx.lion(0.1, weight_decay=wd),
    "adamaxw": lambda wd: gx.adamaxw(0.1, weight_decay=wd),
    "nadamw": lambda wd: gx.nadamw(0.1, weight_decay=wd),
    "schedule_free_adamw": lambda wd: gx.schedule_free_adamw(0.1, weight_decay=wd),
    "schedule_free_sgd": lambda wd: gx.schedule_free_sgd(0.1, weight_decay=wd),
    "torch_adam": lambda wd: gx.torch_compat.adam(lr=0.1, weight_decay=wd),
}


@pytest.mark.parametrize("name", sorted(WEIGHT_DECAYED))
def test_a_zero_weight_decay_number_leaves_the_block_out(name):
    """As ``optax.add_decayed_weights`` skips a zero given as a number: no decay block, no
    ``weight_decay`` in the state (setting one names the way to keep it), and the steps
    of a settable zero (``jnp.asarray(0.0)``; ``g + 0 * x`` is ``g`` exactly, but XLA may
    contract another product into a multiply-add: to 4 ulps of the largest) from a
    smaller program."""
    params = {"w": jnp.asarray(np.linspace(-1, 1, 6).reshape(2, 3), jnp.float32)}
    grads = {"w": jnp.asarray(np.cos(np.arange(6.0)).reshape(2, 3), jnp.float32)}
    off, settable = WEIGHT_DECAYED[name](0.0), WEIGHT_DECAYED[name](jnp.asarray(0.0))

    def names(values):  # a partition's (muon's) values are by group
        return {k for k, v in values.items() for k in (names(v) if isinstance(v, dict) else [k])}

    state = off.init(params)
    assert "weight_decay" not in names(gx.get_hyperparams(state))
    with pytest.raises(ValueError, match=r"weight_decay must be .*jnp.asarray\(0.0\)"):
        gx.set_hyperparams(state, weight_decay=0.1)
    assert "weight_decay" in names(gx.get_hyperparams(settable.init(params)))

    def steps(tx):
        def run(params):
            state = tx.init(params)
            for _ in range(2):
                updates, state = tx.update(grads, state, params)
                params = gx.apply_updates(params, updates)
            return params

        compiled = jax.jit(run).lower(params).compile()
        return compiled(params), compiled.as_text().count("\n")

    (ours, size_off), (theirs, size_settable) = steps(off), steps(settable)
    ulp = np.finfo(np.float32).eps * max(1.0, float(np.abs(theirs["w"]).max()))
    np.testing.assert_allclose(ours["w"], theirs["w"], rtol=0, atol=4 * ulp)
    assert size_off < size_settable
