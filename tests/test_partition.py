"""Parameter groups (issue #17): partition, masked, freeze, set_to_zero, per-group hyperparameters.

Oracles: optax's partition, masked and selective_transform (gradxform computes
nothing through them), each group's transform run alone on the whole tree,
runs built with a group's new value, the uninterrupted run (resume), a
float64 run (dtypes), counted bytes (memory), and the documented messages.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import assert_sharded_report, sharded_report

SLOW = pytest.mark.slow
STEPS = 200
PARAMS = {
    "embed": {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)},
    "layer": {"w": jnp.linspace(0.5, -0.5, 12).reshape(4, 3), "bias": jnp.array([0.5, -0.25, 2.0])},
    "head": {"bias": jnp.array([-1.0, 0.0, 0.75])},
}
DECAY = {"embed": {"w": True}, "layer": {"w": True, "bias": False}, "head": {"bias": False}}
GLOB = {"*/bias": "no_decay", "*": "decay"}
TREE = {"embed": "decay", "layer": {"w": "decay", "bias": "no_decay"}, "head": "no_decay"}


def by_ndim(params):
    return jax.tree.map(lambda p: "decay" if p.ndim == 2 else "no_decay", params)


def by_path(path, leaf):
    del leaf
    return "no_decay" if path[-1].key == "bias" else "decay"


LABEL_FORMS = {"glob": GLOB, "tree": TREE, "function": by_ndim, "path_function": by_path}


def grads_at(params, k):
    """A deterministic, step-dependent gradient: the params plus a rotating offset."""
    return jax.tree.map(
        lambda p: p + 0.1 * jnp.cos(k + jnp.arange(p.size).reshape(p.shape)), params
    )


_RUNS = {}


def run(tx, state=None, params=PARAMS, start=0, steps=STEPS, apply=gx.apply_updates):
    """``steps`` steps of ``tx`` from ``(params, state)``, one jitted scan (compiled once each)."""
    key = (tx, steps, apply)
    if key not in _RUNS:

        @jax.jit
        def scan(params, state, start):
            def step(carry, k):
                x, s = carry
                updates, s = tx.update(grads_at(x, k), s, x)
                return (apply(x, updates), s), updates

            ks = start + jnp.arange(steps)
            return jax.lax.scan(step, (params, state), ks)

        _RUNS[key] = scan
    # Each step's updates leave the scan as an output. The parity is that of the update
    # arithmetic: left unmaterialised, XLA may fuse ``x + factor * direction`` across the
    # transform's end, and whether it contracts that into one FMA differs between
    # gradxform's traced scale and optax's literal one, and between CPUs. Measured on a
    # Xeon VM: 7 of 30 params a last bit apart after 200 steps of Adam; with the updates
    # materialised, every step's update and the final params bitwise equal.
    return _RUNS[key](params, tx.init(params) if state is None else state, start)[0]


def assert_bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


def pick(tree, mask):
    return [leaf for leaf, keep in zip(jax.tree.leaves(tree), jax.tree.leaves(mask)) if keep]


ADAM_ALONE = gx.adam(0.01)


def adamw_adam():
    groups = {"decay": gx.adamw(0.01, weight_decay=0.1), "no_decay": gx.adam(0.01)}
    return gx.partition(groups, GLOB)


@pytest.fixture(scope="module")
def partitioned():
    tx = adamw_adam()
    return tx, run(tx)


# --- parity ---------------------------------------------------------------------------------


def test_partition_equals_optax_partition_bitwise(partitioned):
    _, (params, _) = partitioned
    theirs = optax.partition(
        {"decay": optax.adamw(0.01, weight_decay=0.1), "no_decay": optax.adam(0.01)}, TREE
    )
    assert_bitwise(params, run(theirs, apply=optax.apply_updates)[0])


def test_each_group_equals_its_transform_alone_bitwise(partitioned):
    _, (params, _) = partitioned
    decay_alone = run(gx.adamw(0.01, weight_decay=0.1))[0]
    x, s = run(ADAM_ALONE, steps=STEPS // 2)  # two halves: the compile is shared with below
    no_decay_alone = run(ADAM_ALONE, s, x, start=STEPS // 2, steps=STEPS // 2)[0]
    no_decay = jax.tree.map(lambda m: not m, DECAY)
    assert_bitwise(pick(params, DECAY), pick(decay_alone, DECAY))
    assert_bitwise(pick(params, no_decay), pick(no_decay_alone, no_decay))


def test_masked_equals_optax_masked_bitwise():
    ours = gx.chain(gx.masked(gx.scale_by_adam(), DECAY), gx.scale(-0.01))
    theirs = optax.chain(optax.masked(optax.scale_by_adam(), DECAY), optax.scale(-0.01))
    got, state = run(ours)
    assert_bitwise(got, run(theirs, apply=optax.apply_updates)[0])
    # the inner state holds buffers for the selected leaves only
    shaped = [x.shape for x in jax.tree.leaves(state) if x.ndim > 0]
    assert shaped == [(4, 3), (4, 3), (4, 3), (4, 3)]  # mu and nu of the two matrices


def test_freeze_equals_optax_selective_transform_and_holds_frozen_leaves_still():
    frozen = {"embed": True, "layer": False, "head": True}
    ours = gx.freeze(gx.adamw(0.01, weight_decay=0.1), ["embed", "head"])
    theirs = optax.transforms.selective_transform(
        optax.adamw(0.01, weight_decay=0.1), freeze_mask=frozen
    )
    got, _ = run(ours)
    assert_bitwise(got, run(theirs, apply=optax.apply_updates)[0])
    assert_bitwise(got["embed"], PARAMS["embed"])
    assert_bitwise(got["head"], PARAMS["head"])
    assert not np.array_equal(got["layer"]["w"], PARAMS["layer"]["w"])


def test_set_to_zero_equals_optax():
    g = grads_at(PARAMS, 3)
    ours, _ = gx.set_to_zero().update(g, gx.set_to_zero().init(PARAMS))
    theirs, _ = optax.set_to_zero().update(g, optax.set_to_zero().init(PARAMS))
    assert_bitwise(ours, theirs)


def state_bytes(state):
    """Bytes of the state leaves shaped like a parameter (moments; not scalars)."""
    return sum(x.nbytes for x in jax.tree.leaves(state) if x.ndim > 0)


def test_freezing_half_the_model_halves_the_optimizer_state():
    half = ["embed", "head"]  # 12 + 3 of the 30 floats
    assert sum(x.size for x in jax.tree.leaves([PARAMS[k] for k in half])) * 2 == 30
    full = state_bytes(gx.adam(0.1).init(PARAMS))
    frozen = state_bytes(gx.freeze(gx.adam(0.1), half).init(PARAMS))
    assert full == 2 * 30 * 4  # mu and nu, float32
    assert frozen * 2 == full
    # optax's selective_transform holds the same; a freeze chained in front holds it all
    mask = {"embed": True, "layer": False, "head": True}
    selective = optax.transforms.selective_transform(optax.adam(0.1), freeze_mask=mask)
    assert state_bytes(selective.init(PARAMS)) == frozen
    assert state_bytes(optax.chain(optax.freeze(mask), optax.adam(0.1)).init(PARAMS)) == full


# --- labels ---------------------------------------------------------------------------------


def test_every_label_form_gives_the_same_groups():
    states = {
        name: gx.partition({"decay": gx.adam(0.1), "no_decay": gx.sgd(0.1, 0.9)}, labels).init(
            PARAMS
        )
        for name, labels in LABEL_FORMS.items()
    }
    want = states["tree"]
    for name, state in states.items():
        assert jax.tree.structure(state) == jax.tree.structure(want), name
    # the decay group's moments are the two matrices, the no_decay group's trace the biases
    assert [x.shape for x in jax.tree.leaves(want.inner_states["decay"]) if x.ndim] == [(4, 3)] * 4
    bias_shapes = [x.shape for x in jax.tree.leaves(want.inner_states["no_decay"]) if x.ndim]
    assert bias_shapes == [(3,), (3,)]


def test_glob_first_match_wins_and_matches_subtrees():
    tx = gx.partition(
        {"a": gx.scale(2.0), "b": gx.scale(3.0), "c": gx.scale(5.0)},
        {"layer": "a", "*/bias": "b", "*": "c"},  # layer/bias is matched by "layer" first
    )
    updates, _ = tx.update(PARAMS, tx.init(PARAMS))
    factor = {"embed": {"w": 5.0}, "layer": {"w": 2.0, "bias": 2.0}, "head": {"bias": 3.0}}
    jax.tree.map(lambda u, p, f: np.testing.assert_array_equal(u, f * p), updates, PARAMS, factor)


def test_path_strings_join_keys_indices_and_attributes():
    params = {"layers": [{"w": jnp.ones(2)}, {"w": jnp.ones(2)}]}
    tx = gx.partition(
        {"first": gx.scale(2.0), "rest": gx.scale(0.0)}, {"layers/0/w": "first", "*": "rest"}
    )
    updates, _ = tx.update(params, tx.init(params))
    assert updates["layers"][0]["w"].tolist() == [2.0, 2.0]
    assert updates["layers"][1]["w"].tolist() == [0.0, 0.0]


def test_extra_args_reach_every_group():
    def times_value():
        def update_fn(updates, state, params=None, *, value, **extra):
            return jax.tree.map(lambda u: value * u, updates), state

        return gx.GradientTransformationExtraArgs(lambda p: gx.EmptyState(), update_fn)

    tx = gx.partition({"decay": times_value(), "no_decay": optax.scale(2.0)}, GLOB)
    updates, _ = jax.jit(tx.update)(PARAMS, tx.init(PARAMS), PARAMS, value=3.0)
    np.testing.assert_array_equal(updates["layer"]["w"], 3.0 * PARAMS["layer"]["w"])
    np.testing.assert_array_equal(updates["head"]["bias"], 2.0 * PARAMS["head"]["bias"])


# --- per-group hyperparameters --------------------------------------------------------------


def test_get_hyperparams_is_per_group_for_partitions_and_flat_otherwise():
    state = adamw_adam().init(PARAMS)
    hyper = gx.get_hyperparams(state)
    assert set(hyper) == {"decay", "no_decay"}
    assert float(hyper["decay"]["weight_decay"]) == np.float32(0.1)
    assert "weight_decay" not in hyper["no_decay"]
    assert set(gx.get_hyperparams(gx.adam(0.1).init(PARAMS))) == {
        "b1", "b2", "eps", "eps_root", "learning_rate"
    }  # fmt: skip
    # optax.partition's state (duck-typed on inner_states) holding gradxform transforms
    theirs = optax.partition({"decay": gx.sgd(0.5), "no_decay": gx.sgd(0.25)}, TREE)
    state = gx.set_hyperparams(theirs.init(PARAMS), group="decay", learning_rate=0.125)
    assert {g: float(h["learning_rate"]) for g, h in gx.get_hyperparams(state).items()} == {
        "decay": 0.125,
        "no_decay": 0.25,
    }
    updates, _ = theirs.update(PARAMS, state)
    np.testing.assert_array_equal(updates["embed"]["w"], -0.125 * PARAMS["embed"]["w"])


def test_setting_one_group_changes_only_that_group(partitioned):
    tx, (want_all, _) = partitioned
    half = STEPS // 2
    params, state = run(tx, steps=half)
    state = gx.set_hyperparams(state, group="no_decay", learning_rate=0.003)
    params, _ = run(tx, state, params, start=half, steps=half)
    no_decay = jax.tree.map(lambda m: not m, DECAY)
    # the decay group is the untouched run's, bit for bit
    assert_bitwise(pick(params, DECAY), pick(want_all, DECAY))
    # the no_decay group is Adam alone with its learning rate set at the same step
    x, s = run(ADAM_ALONE, steps=half)
    x, _ = run(ADAM_ALONE, gx.set_hyperparams(s, learning_rate=0.003), x, start=half, steps=half)
    assert_bitwise(pick(params, no_decay), pick(x, no_decay))
    assert not np.array_equal(pick(params, no_decay)[0], pick(want_all, no_decay)[0])


def test_a_group_set_from_the_start_equals_a_run_built_with_the_value(partitioned):
    tx, _ = partitioned
    state = gx.set_hyperparams(tx.init(PARAMS), group="decay", weight_decay=0.5)
    built = gx.partition(
        {"decay": gx.adamw(0.01, weight_decay=0.5), "no_decay": gx.adam(0.01)}, GLOB
    )
    assert_bitwise(run(tx, state)[0], run(built)[0])


def test_set_hyperparams_without_group_sets_every_group():
    state = gx.set_hyperparams(adamw_adam().init(PARAMS), learning_rate=0.5, b1=0.75)
    for hyper in gx.get_hyperparams(state).values():
        assert float(hyper["learning_rate"]) == 0.5 and float(hyper["b1"]) == 0.75


def test_setting_hyperparams_per_group_does_not_recompile(partitioned):
    tx, _ = partitioned

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grads_at(params, 0), state, params)
        return gx.apply_updates(params, updates), state

    params, state = step(PARAMS, tx.init(PARAMS))
    state = gx.set_hyperparams(state, group="decay", learning_rate=1e-4, weight_decay=0.0)
    params, state = step(params, state)
    state = gx.set_hyperparams(state, group="no_decay", b2=0.9)
    params, state = step(params, state)
    state = gx.set_hyperparams(state, learning_rate=3e-4)
    step(params, state)
    assert step._cache_size() == 1


def test_hyperparams_around_a_partition_belong_to_every_group():
    tx = gx.apply_if_finite(adamw_adam(), max_consecutive_skips=4)
    state = tx.init(PARAMS)
    hyper = gx.get_hyperparams(state)
    assert {int(h["max_consecutive_skips"]) for h in hyper.values()} == {4}
    with pytest.raises(
        ValueError,
        match="max_consecutive_skips must be a hyperparameter of group 'decay'.*without group=",
    ):
        gx.set_hyperparams(state, group="decay", max_consecutive_skips=2)
    state = gx.set_hyperparams(state, max_consecutive_skips=2)
    assert int(gx.get_hyperparams(state)["no_decay"]["max_consecutive_skips"]) == 2


def test_nested_partitions_have_dotted_group_names():
    tx = gx.freeze(adamw_adam(), ["embed"])
    state = tx.init(PARAMS)
    hyper = gx.get_hyperparams(state)
    assert list(hyper) == ["train.decay", "train.no_decay", "frozen"]
    assert hyper["frozen"] == {}
    state = gx.set_hyperparams(state, group="train.decay", learning_rate=0.5)
    state = gx.set_hyperparams(state, group="train", b1=0.25)
    hyper = gx.get_hyperparams(state)
    assert float(hyper["train.decay"]["learning_rate"]) == 0.5
    assert float(hyper["train.no_decay"]["learning_rate"]) == np.float32(0.01)
    assert float(hyper["train.decay"]["b1"]) == float(hyper["train.no_decay"]["b1"]) == 0.25


# --- checkpoints and dtypes -----------------------------------------------------------------


def test_resume_from_npz_is_bitwise(partitioned, tmp_path):
    tx, (want_params, want_state) = partitioned
    params, state = run(tx, steps=STEPS // 2)
    gx.checkpoint.save(tmp_path / "params.npz", params)
    gx.checkpoint.save(tmp_path / "state.npz", state)
    params = gx.checkpoint.restore(tmp_path / "params.npz", like=PARAMS)
    state = gx.checkpoint.restore(tmp_path / "state.npz", like=adamw_adam().init(PARAMS))
    got = run(tx, state, params, start=STEPS // 2, steps=STEPS // 2)
    assert_bitwise(got, (want_params, want_state))


def test_resume_from_orbax_is_bitwise(partitioned, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    tx, half = gx.freeze(gx.adam(0.01), ["head"]), STEPS // 2
    params, state = run(tx, steps=half)
    want = run(tx, state, params, start=half, steps=half)  # resuming in memory: one compile
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
        checkpointer.wait_until_finished()
        target = {"params": PARAMS, "opt_state": gx.freeze(gx.adam(0.01), ["head"]).init(PARAMS)}
        restored = checkpointer.restore(tmp_path / "ckpt", target)
    got = run(tx, restored["opt_state"], restored["params"], start=half, steps=half)
    assert_bitwise(got, want)


TOLERANCE = {"bfloat16": 0.05, "float16": 5e-3, "float32": 1e-5, "float64": 1e-12}


def adam_sgd():
    return gx.partition({"decay": gx.adam(0.01), "no_decay": gx.sgd(0.01, 0.9)}, GLOB)


def dtype_run(dtype, steps=20):
    tx = adam_sgd()
    params = jax.tree.map(lambda p: p.astype(dtype), PARAMS)
    state = tx.init(params)
    dtypes = jax.tree.map(lambda a: a.dtype, state)
    params, state = run(tx, state, params, steps=steps)
    return params, state, dtypes


@functools.cache
def float64_reference():
    with jax.enable_x64(True):
        return dtype_run("float64")[0]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "float64"])
def test_dtype_rows(dtype):
    with jax.enable_x64(dtype == "float64"):
        params, state, dtypes = dtype_run(dtype)
        assert all(p.dtype == jnp.dtype(dtype) for p in jax.tree.leaves(params))
        assert jax.tree.map(lambda a: a.dtype, state) == dtypes
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(float64_reference())):
        np.testing.assert_allclose(
            np.asarray(got, np.float64), want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype]
        )


# --- bad input ------------------------------------------------------------------------------


ADAM = gx.adam(0.1)
BUILD_ERRORS = {
    "empty transforms": (
        lambda: gx.partition({}, GLOB),
        ValueError,
        "transforms must be a non-empty dict",
    ),
    "label with a dot": (
        lambda: gx.partition({"a.b": ADAM}, "a.b"),
        ValueError,
        "each label of transforms must be a non-empty string without '.'; got 'a.b'",
    ),
    "not a transform": (
        lambda: gx.partition({"a": "adam"}, "a"),
        TypeError,
        r"transforms\['a'\] must be",
    ),
    "tree label naming no transform": (
        lambda: gx.partition({"decay": ADAM, "no_decay": ADAM}, {**TREE, "head": "no_dec"}),
        ValueError,
        r"labels at 'head' must be one of the transforms' labels \('decay', 'no_decay'\); "
        "got 'no_dec'",
    ),
    "glob label naming no transform": (
        lambda: gx.partition({"decay": ADAM}, {"*/bias": "nodecay", "*": "decay"}),
        ValueError,
        r"labels at '\*/bias' must be one of .*got 'nodecay'",
    ),
    "no labels": (
        lambda: gx.partition({"a": ADAM}, None),
        ValueError,
        "labels must be a pytree of labels",
    ),
    "mask of non-bools": (
        lambda: gx.masked(ADAM, {"embed": 1, "layer": True, "head": False}),
        ValueError,
        "mask at 'embed' must be True or False; got 1",
    ),
    "freeze of non-bools": (
        lambda: gx.freeze(ADAM, {"x": "yes"}),
        ValueError,
        "frozen at 'x' must be True or False",
    ),
}


@pytest.mark.parametrize("case", sorted(BUILD_ERRORS))
def test_bad_input_is_an_error_when_built(case):
    make, error, match = BUILD_ERRORS[case]
    with pytest.raises(error, match=match):
        make()


INIT_ERRORS = {
    "unmatched leaf": (
        {"decay": ADAM, "no_decay": ADAM},
        {"embed/*": "decay", "layer/*": "no_decay"},
        "labels must match every parameter; no pattern matches the leaf at 'head/bias'",
    ),
    "transform never used": (
        {"decay": ADAM, "no_decay": ADAM, "embed": ADAM},
        GLOB,
        "transforms must each label some parameter; no leaf is labelled 'embed'",
    ),
    "tree of another structure": (
        {"decay": ADAM, "no_decay": ADAM},
        {"embed": "decay", "layer": {"w": "decay"}, "head": "no_decay"},
        "labels must be a pytree of labels with the structure of params or a prefix",
    ),
    "callable returning an unknown label": (
        {"decay": ADAM, "no_decay": ADAM},
        lambda path, leaf: "biases" if path[-1].key == "bias" else "decay",
        r"labels at 'head/bias' must be one of .*got 'biases'",
    ),
}


@pytest.mark.parametrize("case", sorted(INIT_ERRORS))
def test_label_errors_come_at_the_first_init_naming_the_path(case):
    transforms, labels, match = INIT_ERRORS[case]
    tx = gx.partition(transforms, labels)
    with pytest.raises(ValueError, match=match):
        tx.init(PARAMS)


def test_allow_empty_groups_accepts_a_transform_labelling_nothing_and_it_holds_no_state():
    transforms = {"decay": ADAM, "no_decay": ADAM, "embed": ADAM}
    tx = gx.partition(transforms, GLOB, allow_empty_groups=True)
    state = tx.init(PARAMS)
    assert jax.tree.leaves(state.inner_states["embed"].inner_state) == []  # no moments
    # the other groups move exactly as without the empty one
    reference = gx.partition({"decay": ADAM, "no_decay": ADAM}, GLOB)
    ours, _ = tx.update(PARAMS, state, PARAMS)
    theirs, _ = reference.update(PARAMS, reference.init(PARAMS), PARAMS)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), ours, theirs))


def test_a_group_that_does_not_exist_is_named_with_the_groups_there_are():
    state = adamw_adam().init(PARAMS)
    with pytest.raises(
        ValueError,
        match=r"group must be a group of this state \(one of 'decay', 'no_decay'\); got 'embed'",
    ):
        gx.set_hyperparams(state, group="embed", learning_rate=0.1)
    with pytest.raises(ValueError, match="group must be None for a state without a partition"):
        gx.set_hyperparams(gx.adam(0.1).init(PARAMS), group="decay", learning_rate=0.1)
    with pytest.raises(
        ValueError, match="weight_decay must be a hyperparameter of group 'no_decay'"
    ):
        gx.set_hyperparams(state, group="no_decay", weight_decay=0.1)
    with pytest.raises(ValueError, match="learning_rate must be a real number >= 0"):
        gx.set_hyperparams(state, group="decay", learning_rate=-1.0)


# --- sharding -------------------------------------------------------------------------------

SHARDED_GLOB = {"b1": "no_decay", "scale": "no_decay", "*": "decay"}
# each factory returns (tx, extra_args): sharded_run reads any tuple as that pair, and a
# transform is itself a tuple (a NamedTuple of init and update)
SHARDED = {
    "partition_adamw_adam": lambda: (
        gx.partition(
            {"decay": gx.adamw(0.01, weight_decay=0.1), "no_decay": gx.adam(0.01)}, SHARDED_GLOB
        ),
        {},
    ),
    "masked_adam": lambda: (
        gx.chain(
            gx.masked(gx.scale_by_adam(), {"w1": True, "b1": False, "w2": True, "scale": False}),
            gx.scale(-0.01),
        ),
        {},
    ),
    "freeze_adam": lambda: (gx.freeze(gx.adam(0.01), ["w2", "scale"]), {}),
}


@SLOW
def test_sharded_groups_keep_shardings_without_collectives():
    report = sharded_report("tests.test_partition:SHARDED")
    assert_sharded_report(report, SHARDED)
    assert all(row["bitwise"] for row in report.values()), report
