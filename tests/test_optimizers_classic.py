"""LAMB, LARS, Adadelta, Rprop and NAdam with momentum decay, against optax and by hand.

optax is the oracle only: gradxform computes nothing through it. Each optax row runs
200 steps (every row of a dtype in one jitted ``lax.scan``) on the shared problem
(tests/problems.py, seed 3, a mixed tree with a batched 3-D leaf) in float32 and
float64, and the params after every 20th step must be bitwise equal to optax's: the
rows compute optax's expressions in optax's order (Adam, then the decay, then
``c ||x|| / (||u|| + eps)`` with ``jnp.linalg.norm`` of the whole leaf; Adadelta's
``sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g``; LARS's momentum after the learning
rate, as optax's ``trace``). Rprop is
compared with ``lagged=True``, which reproduces optax 0.2.8's one-step-late output;
the default (torch's) is pinned by a NumPy loop here and by torch recordings in
tests/test_torch_parity_more.py. NAdam with momentum decay has no optax counterpart:
a NumPy loop here and torch recordings there.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import TOLERANCE, assert_sharded_report, problem, sharded_report
from tests.trajectories import trajectories

STEPS, EVERY = 200, 20
SHAPES = {"w": (4, 3), "b": (5,), "batched": (2, 3, 4), "s": ()}


def _matrices(p):
    return {k: p[k].ndim >= 2 for k in p}


# name -> (gradxform optimizer, optax optimizer); not the defaults where the defaults
# would leave a branch untested
ROWS = {
    "lamb": (lambda: gx.lamb(1e-2), lambda: optax.lamb(1e-2)),
    "lamb_decay_masked": (
        lambda: gx.lamb(1e-2, 0.8, 0.99, 1e-4, 1e-8, 0.1, mask=_matrices),
        lambda: optax.lamb(1e-2, 0.8, 0.99, 1e-4, 1e-8, 0.1, mask=_matrices),
    ),
    "lars": (lambda: gx.lars(0.1), lambda: optax.lars(0.1)),
    "lars_nesterov_masked": (
        lambda: gx.lars(0.1, 0.01, _matrices, 0.01, 1e-6, _matrices, 0.8, nesterov=True),
        lambda: optax.lars(0.1, 0.01, _matrices, 0.01, 1e-6, _matrices, 0.8, nesterov=True),
    ),
    "adadelta": (lambda: gx.adadelta(1.0), lambda: optax.adadelta(1.0)),
    "adadelta_decay": (
        lambda: gx.adadelta(0.5, 0.8, 1e-4, 0.01),
        lambda: optax.adadelta(0.5, 0.8, 1e-4, 0.01),
    ),
    "rprop_lagged": (lambda: gx.rprop(0.01, lagged=True), lambda: optax.rprop(0.01)),
    "rprop_lagged_bounds": (
        lambda: gx.rprop(0.05, 0.3, 1.5, 1e-3, 0.2, lagged=True),
        lambda: optax.rprop(0.05, 0.3, 1.5, 1e-3, 0.2),
    ),
}


@functools.cache
def _optax_rows(dtype):
    """Every row's two trajectories in one compiled program per dtype (tests/trajectories.py)."""
    table = {}
    for name, (make_gx, make_optax) in ROWS.items():
        table[name, "gx"] = (make_gx(), gx.apply_updates)
        table[name, "optax"] = (make_optax(), optax.apply_updates)
    return trajectories(table, dtype, STEPS, EVERY, seed=3, shapes=SHAPES)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_equals_optax_over_200_steps(name, dtype):
    runs = _optax_rows(dtype)
    ours, theirs = runs[name, "gx"], runs[name, "optax"]
    start, _ = problem(dtype, 3, STEPS, SHAPES)
    for leaf in SHAPES:
        assert ours[leaf].dtype == np.dtype(dtype)
        assert ours[leaf].shape == (STEPS // EVERY, *SHAPES[leaf])
        # the run moved: a parity check of two optimizers that do nothing cannot fail
        assert np.all(ours[leaf][-1] != np.asarray(start[leaf]))
        np.testing.assert_array_equal(ours[leaf], theirs[leaf], err_msg=f"{name}: {leaf}")


# --- the blocks by hand ---------------------------------------------------------------


def test_trust_ratio_is_one_ratio_per_whole_leaf():
    """A batched (2, 3, 4) leaf gets ||x|| / ||u|| over all 24 elements (optax's choice),
    not one ratio per matrix; a zero leaf or a zero update keeps ratio 1."""
    rng = np.random.default_rng(0)
    x = {"batched": rng.normal(size=(2, 3, 4)), "zero": np.zeros(3), "v": rng.normal(size=3)}
    u = {"batched": rng.normal(size=(2, 3, 4)), "zero": rng.normal(size=3), "v": np.zeros(3)}
    u["batched"][1] *= 10.0  # the two matrices' ratios differ
    xs, us = (jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t) for t in (x, u))
    tx = gx.scale_by_trust_ratio(trust_coefficient=0.5, eps=1e-3)
    out, _ = tx.update(us, tx.init(xs), xs)
    ratio = 0.5 * np.linalg.norm(x["batched"]) / (np.linalg.norm(u["batched"]) + 1e-3)
    np.testing.assert_allclose(np.asarray(out["batched"]), ratio * u["batched"], rtol=1e-6)
    per_matrix = 0.5 * np.linalg.norm(x["batched"][0]) / np.linalg.norm(u["batched"][0])
    assert abs(per_matrix - ratio) > 0.1 * ratio  # the choice is visible on this leaf
    np.testing.assert_array_equal(np.asarray(out["zero"]), np.asarray(us["zero"]))
    np.testing.assert_array_equal(np.asarray(out["v"]), np.zeros(3))


def test_trust_ratio_with_min_norm_equals_optax_and_has_finite_derivatives():
    x = {"a": jnp.array([3.0, 4.0]), "z": jnp.zeros(2), "m": jnp.array([[1e-3, 0.0]])}
    u = {"a": jnp.array([1e-4, 0.0]), "z": jnp.array([1.0, 2.0]), "m": jnp.array([[2.0, 1.0]])}
    tx = gx.scale_by_trust_ratio(min_norm=1e-2, trust_coefficient=0.7, eps=1e-6)
    ref = optax.scale_by_trust_ratio(min_norm=1e-2, trust_coefficient=0.7, eps=1e-6)

    @jax.jit
    def both(x):
        ours, _ = tx.update(u, tx.init(x), x)
        theirs, _ = ref.update(u, ref.init(x), x)
        # the norm's derivative at a zero leaf is finite (the floor is taken before the root)
        d = jax.grad(lambda p: sum(jnp.sum(v) for v in tx.update(u, tx.init(p), p)[0].values()))
        return ours, theirs, d(x)

    ours, theirs, d = both(x)
    for k in x:
        np.testing.assert_array_equal(np.asarray(ours[k]), np.asarray(theirs[k]))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in d.values())


def test_lars_takes_optax_bool_masks():
    """optax's masks ``True`` (every leaf) and ``False`` (none): the same step as optax."""
    x = {"w": jnp.array([[3.0, 1.0]]), "b": jnp.array([1.0, 2.0])}
    g = {"w": jnp.array([[1.0, -2.0]]), "b": jnp.array([0.5, 0.5])}
    for mask in (True, False):
        tx = gx.lars(0.1, 0.1, mask, trust_ratio_mask=not mask)
        ref = optax.lars(0.1, 0.1, mask, trust_ratio_mask=not mask)
        ours, theirs = tx.update(g, tx.init(x), x)[0], ref.update(g, ref.init(x), x)[0]
        for k in x:
            np.testing.assert_array_equal(np.asarray(ours[k]), np.asarray(theirs[k]))


def _irprop_minus(gs, lr, eta_minus, eta_plus, low, high):
    """torch's Rprop written out in NumPy float32: the params' changes at each step."""
    step = np.full(gs[0].shape, lr, np.float32)
    prev = np.zeros_like(gs[0])
    changes = []
    for g in gs:
        s = np.sign(g * prev)
        factor = np.where(s > 0, eta_plus, np.where(s < 0, eta_minus, 1)).astype(np.float32)
        step = np.clip(step * factor, low, high).astype(np.float32)
        g = np.where(s < 0, 0, g).astype(np.float32)
        changes.append(-np.sign(g) * step)
        prev = g
    return changes


def test_rprop_by_hand_sign_changes_and_bounds():
    """Sign kept (grows, hits max), changed (shrinks, no step, no comparison next), zero."""
    gs = [
        np.array([1.0, 1.0, -2.0, 0.0, 3.0], np.float32),
        np.array([2.0, -1.0, -1.0, 1.0, 3.0], np.float32),
        np.array([1.0, -1.0, 5.0, 1.0, 3.0], np.float32),
        np.array([-1.0, 2.0, 5.0, -1.0, 3.0], np.float32),
        np.array([-1.0, 2.0, -5.0, -1.0, 3.0], np.float32),
    ]
    args = (0.1, 0.5, 1.2, 1e-3, 0.15)
    tx = gx.rprop(*args)
    state, update = tx.init(jnp.zeros(5)), jax.jit(tx.update)
    for g, want in zip(gs, _irprop_minus(gs, *args)):
        u, state = update(jnp.asarray(g), state)
        np.testing.assert_array_equal(np.asarray(u), want)
    # a learning rate outside the bounds: torch clips it at the first update
    tx = gx.rprop(100.0, max_step_size=50.0)
    u, _ = tx.update(jnp.ones(1), tx.init(jnp.zeros(1)))
    assert float(u[0]) == -50.0


def test_rprop_lagged_is_the_default_one_update_late():
    gs = [jnp.array([1.0, -1.0]), jnp.array([1.0, -1.0]), jnp.array([1.0, 1.0])]
    now, late = gx.rprop(0.1), gx.rprop(0.1, lagged=True)
    s_now, s_late = now.init(jnp.zeros(2)), late.init(jnp.zeros(2))
    outs_now, outs_late = [], []
    for g in gs:
        u, s_now = jax.jit(now.update)(g, s_now)
        v, s_late = jax.jit(late.update)(g, s_late)
        outs_now.append(np.asarray(u))
        outs_late.append(np.asarray(v))
    np.testing.assert_array_equal(outs_late[0], [0.0, 0.0])
    np.testing.assert_array_equal(outs_late[1], outs_now[0])
    # the second element changed sign at the third update: neither moves it
    np.testing.assert_array_equal(outs_late[2], [outs_now[1][0], 0.0])


def test_adadelta_by_hand_three_steps():
    rho, eps, lr = 0.8, 1e-2, 0.5
    gs = [np.array([2.0, -1.0]), np.array([-3.0, 0.5]), np.array([1.0, 1.0])]
    tx = gx.adadelta(lr, rho, eps)
    x = jnp.zeros(2)
    state, update = tx.init(x), jax.jit(tx.update)
    eg, ex = np.zeros(2), np.zeros(2)
    for g in gs:
        u, state = update(jnp.asarray(g, jnp.float32), state, x)
        eg = rho * eg + (1 - rho) * g**2
        delta = np.sqrt(ex + eps) / np.sqrt(eg + eps) * g
        ex = rho * ex + (1 - rho) * delta**2
        np.testing.assert_allclose(np.asarray(u), -lr * delta, rtol=1e-6)


def test_nadam_momentum_decay_by_hand(x64):
    """torch's NAdam step written out in NumPy float64 (L2 decay added to g)."""
    b1, b2, eps, lr, psi, wd = 0.8, 0.9, 1e-3, 0.1, 0.05, 0.01
    rng = np.random.default_rng(1)
    gs = rng.normal(size=(6, 3))
    tx = gx.nadam_momentum_decay(lr, b1, b2, eps, wd, psi)
    x = jnp.asarray(rng.normal(size=3))
    xn = np.asarray(x).copy()
    state, update = tx.init(x), jax.jit(tx.update)
    m, v, product = np.zeros(3), np.zeros(3), 1.0
    for t, g in enumerate(gs, start=1):
        u, state = update(jnp.asarray(g), state, x)
        x = gx.apply_updates(x, u)
        r = g + wd * xn
        mu, mu_next = (b1 * (1 - 0.5 * 0.96 ** (k * psi)) for k in (t, t + 1))
        product *= mu
        m = b1 * m + (1 - b1) * r
        v = b2 * v + (1 - b2) * r**2
        denom = np.sqrt(v / (1 - b2**t)) + eps
        xn = (
            xn - lr * ((1 - mu) / (1 - product) * r + mu_next / (1 - product * mu_next) * m) / denom
        )
        np.testing.assert_allclose(np.asarray(x), xn, rtol=1e-12)
    assert float(state.inner_state[1].numerator.mu_product) == pytest.approx(product, rel=1e-12)


# --- hyperparameters, bad input, dtypes, resume, sharding -----------------------------


def test_hyperparameters_are_in_the_state_once_and_settable():
    params = {"w": jnp.ones((2, 2))}
    names = {
        "lamb": ["b1", "b2", "eps", "eps_root", "learning_rate", "min_norm"],
        "lars": ["eps", "learning_rate", "min_norm", "momentum", "trust_coefficient"],
        "adadelta": ["eps", "learning_rate", "rho"],  # weight_decay=0: no decay block
        "rprop": ["eta_minus", "eta_plus", "max_step_size", "min_step_size", "step_scale"],
    }
    names["lamb"] += ["trust_coefficient", "trust_eps"]
    for name, expected in names.items():
        assert sorted(gx.get_hyperparams(getattr(gx, name)(0.1).init(params))) == expected
    # set without recompiling: a zero trust coefficient stops LARS; step_scale 0 stops Rprop
    for tx, key in ((gx.lars(0.1), "trust_coefficient"), (gx.rprop(0.1), "step_scale")):
        state = gx.set_hyperparams(tx.init(params), **{key: 0.0})
        u, _ = jax.jit(tx.update)({"w": jnp.ones((2, 2))}, state, params)
        np.testing.assert_array_equal(np.asarray(u["w"]), np.zeros((2, 2)))


BAD = [
    (lambda: gx.lamb(0.1, b1=1.0), "b1"),
    (lambda: gx.lamb(0.1, weight_decay=-1.0), "weight_decay"),
    (lambda: gx.lamb(0.1, trust_coefficient=-1.0), "trust_coefficient"),
    (lambda: gx.lamb(-0.1), "learning_rate"),
    (lambda: gx.lars(0.1, momentum=1.0), "momentum"),
    (lambda: gx.lars(0.1, weight_decay=-0.1), "weight_decay"),
    (lambda: gx.lars(0.1, eps=-1.0), "eps"),
    (lambda: gx.lars(0.1, min_norm=-1.0), "min_norm"),
    (lambda: gx.adadelta(rho=1.0), "rho"),
    (lambda: gx.adadelta(eps=-1e-6), "eps"),
    (lambda: gx.adadelta(weight_decay=-1.0), "weight_decay"),
    (lambda: gx.rprop(0.0), "learning_rate"),
    (lambda: gx.rprop(0.1, eta_minus=1.0), "eta_minus"),
    (lambda: gx.rprop(0.1, eta_plus=1.0), "eta_plus"),
    (lambda: gx.rprop(0.1, min_step_size=1.0, max_step_size=0.5), "max_step_size"),
    (lambda: gx.nadam_momentum_decay(b1=1.0), "b1"),
    (lambda: gx.nadam_momentum_decay(momentum_decay=-1.0), "momentum_decay"),
    (lambda: gx.nadam_momentum_decay(weight_decay=-1.0), "weight_decay"),
    (lambda: gx.scale_by_trust_ratio(min_norm=-1.0), "min_norm"),
]


@pytest.mark.parametrize("index", range(len(BAD)))
def test_bad_input_raises_when_built(index):
    build, name = BAD[index]
    with pytest.raises(ValueError, match=f"{name} must be"):
        build()


def test_bad_types_and_complex_rprop_raise():
    with pytest.raises(TypeError, match="lagged must be"):
        gx.rprop(0.1, lagged="yes")
    with pytest.raises(TypeError, match="decoupled_weight_decay must be"):
        gx.nadam_momentum_decay(decoupled_weight_decay=1)
    with pytest.raises(TypeError, match="params must hold real floating-point"):
        gx.rprop(0.1).init(jnp.ones(2, jnp.complex64))


# one factory per new optimizer, options on where they add state or a branch
OPTIMIZERS = {
    "lamb": lambda: gx.lamb(1e-2, weight_decay=0.01),
    "lars": lambda: gx.lars(0.1, weight_decay=1e-3, nesterov=True),
    "adadelta": lambda: gx.adadelta(1.0, weight_decay=1e-3),
    "rprop": lambda: gx.rprop(0.01),
    "nadam_momentum_decay": lambda: gx.nadam_momentum_decay(1e-2, weight_decay=0.01),
}
PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -0.25])}


def _runner(txs):
    """One jitted scan of each transform of ``txs`` (a tuple, each in its own slot of the
    carry: one compile for them all) over a vector of step numbers."""

    def step(carry, t):
        new = []
        for (x, s), tx in zip(carry, txs):
            g = jax.tree.map(lambda p: (jnp.sin(3.0 * p + t) + 0.5 * p).astype(p.dtype), x)
            u, s = tx.update(g, s, x)
            new.append((gx.apply_updates(x, u), s))
        return new, None

    run = jax.jit(lambda carry, ts: jax.lax.scan(step, carry, ts)[0])
    # every call's arguments committed to the one device, as restored checkpoints are (a
    # call with uncommitted arrays and one with committed arrays compile twice)
    device = jax.devices()[0]
    return lambda carry, ts: run(jax.device_put(carry, device), jax.device_put(ts, device))


@functools.cache
def _dtype_runs():
    """(name, dtype) -> (params after 5 steps, the initial state, the state after them):
    every optimizer in one program per dtype."""
    runs, names = {}, sorted(OPTIMIZERS)
    with jax.enable_x64(True):
        for dtype in ("bfloat16", "float32", "float64"):
            params = jax.tree.map(lambda p, d=dtype: p.astype(d), PARAMS)
            txs = tuple(OPTIMIZERS[name]() for name in names)
            states = [tx.init(params) for tx in txs]
            out = _runner(txs)([(params, s) for s in states], jnp.arange(5.0, dtype=dtype))
            for name, state, (x, new_state) in zip(names, states, out):
                runs[name, dtype] = (x, state, new_state)
    return runs


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_dtype_rows(name):
    """bfloat16, float32, float64: params keep their dtype, the state never changes
    dtype, and 5 steps stay within the dtype's tolerance (tests/helpers.py) of float64."""
    runs = {}
    with jax.enable_x64(True):
        for dtype in ("bfloat16", "float32", "float64"):
            x, state, new_state = _dtype_runs()[name, dtype]
            assert all(a.dtype == jnp.dtype(dtype) for a in jax.tree.leaves(x)), dtype
            dtypes = jax.tree.map(lambda a: a.dtype, new_state)
            assert dtypes == jax.tree.map(lambda a: a.dtype, state), dtype
            runs[dtype] = jax.tree.map(lambda a: np.asarray(a, np.float64), x)
    for dtype in ("bfloat16", "float32"):
        for leaf in PARAMS:
            scale = np.max(np.abs(runs["float64"][leaf]))
            err = np.max(np.abs(runs[dtype][leaf] - runs["float64"][leaf])) / scale
            assert err <= TOLERANCE[dtype], (dtype, leaf, err)


def _bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Every optimizer (one program for them all): 10 steps, save, 10 more; restored from
    the files into a fresh template, the same 10 steps. name -> (restored params, the
    straight run's (params, state), the restored run's)."""
    names, directory = sorted(OPTIMIZERS), tmp_path_factory.mktemp("resume")
    txs = tuple(OPTIMIZERS[name]() for name in names)
    run = _runner(txs)
    first, then = jnp.arange(10.0), jnp.arange(10.0, 20.0)
    saved = run([(PARAMS, tx.init(PARAMS)) for tx in txs], first)
    for name, (params, state) in zip(names, saved):
        gx.checkpoint.save(directory / f"{name}_params.npz", params)
        gx.checkpoint.save(directory / f"{name}_state.npz", state)
    want = run(saved, then)
    restored = []
    for name in names:
        template = OPTIMIZERS[name]().init(PARAMS)
        params = gx.checkpoint.restore(directory / f"{name}_params.npz", like=PARAMS)
        state = gx.checkpoint.restore(directory / f"{name}_state.npz", like=template)
        restored.append((params, state))
    got = run(restored, then)
    return {name: (restored[i][0], want[i], got[i]) for i, name in enumerate(names)}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_resume_from_checkpoint_is_bitwise(name, resumed):
    """10 steps, save, 10 more; restored from the files into a fresh template, the same
    10 steps give the same bits (Rprop's step sizes and NAdam's product included)."""
    params, want, got = resumed[name]
    _bitwise(tuple(got), tuple(want))
    assert not np.array_equal(np.asarray(want[0]["w"]), np.asarray(params["w"]))  # it moved


# the 8-device sharding table (tests/scripts/sharded_run.py): the elementwise rows need
# no collective; LAMB's and LARS's trust ratio is a whole-leaf norm, so a leaf sharded
# over the mesh needs its two squared norms summed across the shards: one all-reduce
SHARDED = {
    "adadelta": lambda: gx.adadelta(1.0, weight_decay=1e-3),
    "rprop": lambda: gx.rprop(0.01),
    "nadam_momentum_decay": lambda: gx.nadam_momentum_decay(1e-2),
    "lamb": lambda: gx.lamb(1e-2, weight_decay=0.01),
    "lars": lambda: gx.lars(0.1, weight_decay=1e-3),
}
NEEDS_ALL_REDUCE = {"lamb", "lars"}


@pytest.mark.slow
def test_sharded_on_eight_devices():
    report = sharded_report("tests.test_optimizers_classic:SHARDED")
    for name in NEEDS_ALL_REDUCE:  # exactly the one reduction of the leaves' norms
        assert report[name]["collectives"] == ["all-reduce"], (name, report[name])
        report[name]["collectives"] = []
    assert_sharded_report(report, SHARDED)  # and otherwise as the elementwise rows
