"""Sophia and its Hessian-diagonal estimates against independent references.

* ``curvature.hutchinson_diagonal`` against the dense Hessian (``jax.hessian``)
  of a small non-separable model: the mean of 4,000 probes lies within 5
  standard errors of ``diag(H)``, the standard error computed from ``H``
  itself (a probe's variance at ``i`` is ``sum_{j != i} H_ij**2``); and it is
  exact, with any probe, for a diagonal Hessian.
* ``curvature.gauss_newton_bartlett_diagonal`` against the dense GGN
  ``J^T H_L J`` (``jax.jacobian`` and ``jax.hessian``) of a tiny softmax model
  with logits ``(N, T, C)``: the expectation of ``B g g`` over every one of the
  ``C**(N T)`` label draws, enumerated in NumPy, equals ``diag(GGN)``; each
  library estimate is one of those enumerated values; the mean of 4,000
  estimates lies within 5 standard errors (the exact variance from the same
  enumeration).
* ``sophia`` against ``optax.contrib.sophia`` (0.2.8) over 200 steps on the
  shared mixed tree with a batched 3-D leaf (tests/helpers.py), float32 and
  float64: bitwise, with optax's options (``bias_correction=True,
  delayed=True``) and both using Hutchinson on the objective. The shared
  problem is separable, so ``u * (H u) = diag(H)`` for every sign vector:
  the two libraries' different probes give the same bits.
* The paper's update (the defaults) and SophiaG's ``form="sum"`` against a
  naive NumPy loop written here, with the same injected estimates
  (``hessian_diag=``), over the same 200 steps.
* The defaults against pytorch-optimizer's SophiaH (Hutchinson inside torch,
  Rademacher probes: exact on the separable problem), recorded in
  tests/reference/torch_sophia.npz by tests/reference/record_torch_sophia.py.
"""

from __future__ import annotations

import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib as oc
import pytest
from jax.flatten_util import ravel_pytree

import gradxform as gx
from gradxform import curvature
from tests.helpers import assert_sharded_report, problem, sharded_report, trajectory
from tests.problems import CURVATURE, grad, make_problem

STEPS, EVERY = 200, 20
SHAPES = {"w": (4, 3), "b": (5,), "batched": (2, 3, 4), "s": ()}
PROBES = 4000


def separable_objective(params):
    """A function whose Hessian is the shared problem's, ``diag(CURVATURE - sin x)``."""
    return sum(jnp.sum(0.5 * CURVATURE * a * a + jnp.sin(a)) for a in jax.tree.leaves(params))


def _passing(tx, **extra):
    """``tx`` with ``extra`` given to every update (a fixed objective for Hutchinson)."""

    def update(updates, state, params=None, **ignored):
        del ignored
        return tx.update(updates, state, params, **extra)

    return optax.GradientTransformationExtraArgs(tx.init, update)


# ---------------------------------------------------------------- Hutchinson


def _small_model(p):
    """Non-separable: every parameter meets every other through tanh of sums."""
    x = jnp.array([[1.0, -0.5, 0.3], [0.2, 0.8, -1.0]])
    hidden = jnp.tanh(x @ p["a"] + p["b"][0])
    return jnp.sum(jnp.sin(hidden @ p["c"]) ** 2)


SMALL = {"a": jnp.array([0.3, -0.7, 0.5]), "b": jnp.array([[0.2]]), "c": jnp.array([1.3, -0.6])}


def test_hutchinson_is_unbiased_within_its_standard_error(x64):
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), SMALL)
    flat, unravel = ravel_pytree(params)
    dense = np.asarray(jax.jit(jax.hessian(lambda v: _small_model(unravel(v))))(flat))
    assert np.abs(dense - np.diag(np.diag(dense))).max() > 0.1  # the test needs off-diagonals
    sigma = np.sqrt((dense**2).sum(axis=1) - np.diag(dense) ** 2)  # one probe's std
    bound = 5 * sigma / np.sqrt(PROBES)
    many = curvature.hutchinson_diagonal(_small_model, params, jax.random.key(1), PROBES)
    error = np.abs(np.asarray(ravel_pytree(many)[0]) - np.diag(dense))
    assert np.all(error <= bound), (error, bound)
    assert np.all(error > 0)  # an average of probes, not the diagonal itself


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    x = {"w": jnp.linspace(-2.0, 2.0, 6).reshape(2, 3), "b": jnp.array([0.5, -1.0])}
    expected = jax.tree.map(lambda a: CURVATURE - jnp.sin(a), x)
    estimate = jax.jit(jax.vmap(lambda k: curvature.hutchinson_diagonal(separable_objective, x, k)))
    got = estimate(jax.random.split(jax.random.key(0), 3))  # three probes, each exact
    for k in x:
        np.testing.assert_allclose(got[k], jnp.stack([expected[k]] * 3), rtol=1e-6, atol=1e-6)
        assert got[k].dtype == jnp.float32


# ----------------------------------------------------- Gauss-Newton-Bartlett

N, T, C = 2, 2, 3  # logits (N, T, C): B = 4 rows, 3**4 = 81 label draws
GNB_X = np.array([[[0.5, -1.0], [1.5, 0.2]], [[-0.3, 0.8], [1.0, 1.0]]])
GNB_PARAMS = {
    "w": np.array([[0.4, -0.2, 0.9], [0.3, 0.6, -0.5]]),
    "v": np.array([[1.0, 0.2, -0.4], [0.1, -0.8, 0.5], [0.3, 0.3, 0.7]]),
}


def _logits(p, x):
    return jnp.tanh(x @ p["w"]) @ p["v"]


def _mean_cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1))


def _enumerated_gnb(params):
    """Every label draw's ``B g g``, its probability, and the Jacobian (float64 NumPy)."""
    flat, unravel = ravel_pytree(params)
    logits = np.asarray(_logits(params, GNB_X)).reshape(-1, C)
    jac = np.asarray(jax.jit(jax.jacobian(lambda v: _logits(unravel(v), GNB_X).ravel()))(flat))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    rows = logits.shape[0]
    values, weights = [], []
    for labels in itertools.product(range(C), repeat=rows):
        scores = (p - np.eye(C)[list(labels)]) / rows
        g = np.einsum("bc,bcn->n", scores, jac.reshape(rows, C, -1))
        values.append(rows * g * g)
        weights.append(np.prod(p[np.arange(rows), list(labels)]))
    return np.array(values), np.array(weights), jac


def test_gnb_expectation_is_the_ggn_diagonal(x64):
    params = jax.tree.map(jnp.asarray, GNB_PARAMS)
    values, weights, jac = _enumerated_gnb(params)
    flat, unravel = ravel_pytree(params)
    # the dense GGN of the mean cross-entropy: J^T H_L J (H_L does not depend on the labels)
    labels = jnp.zeros((N, T), jnp.int32)
    loss = lambda z: _mean_cross_entropy(z.reshape(N, T, C), labels)  # noqa: E731
    loss_hessian = np.asarray(jax.jit(jax.hessian(loss))(_logits(params, GNB_X).ravel()))
    ggn = np.diag(jac.T @ loss_hessian @ jac)
    mean = weights @ values
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(mean, ggn, rtol=1e-10, atol=1e-14)
    # the library's draws: each is B g g at one label draw, and they follow the model's
    # softmax: the mean of many is within 5 standard errors of the GGN's diagonal
    estimate = lambda k: ravel_pytree(  # noqa: E731
        curvature.gauss_newton_bartlett_diagonal(_logits, params, GNB_X, k)
    )[0]
    draws = np.asarray(jax.jit(jax.vmap(estimate))(jax.random.split(jax.random.key(5), PROBES)))
    assert np.abs(values - draws[0]).max(axis=1).min() < 1e-12
    sigma = np.sqrt(weights @ (values - mean) ** 2)
    assert np.all(np.abs(draws.mean(axis=0) - ggn) <= 5 * sigma / np.sqrt(PROBES))
    # the GGN of the mean over positions is the Fisher of the per-example sum over T rows
    fisher = curvature.fisher_product(_logits, params, GNB_X)
    columns = jax.jit(jax.vmap(lambda e: ravel_pytree(fisher(unravel(e)))[0]))(jnp.eye(flat.size))
    np.testing.assert_allclose(ggn, np.diag(np.asarray(columns)) / T, rtol=1e-10)


# --------------------------------------------------------- the update rule

# name -> (gradxform sophia, optax.contrib.sophia); optax's default Hutchinson estimator
OPTAX_ROWS = {
    "defaults": (
        lambda: gx.sophia(0.01, bias_correction=True, delayed=True),
        lambda: oc.sophia(0.01),
    ),
    "curvature_matters": (
        lambda: gx.sophia(
            0.05,
            0.9,
            0.95,
            0.5,
            1e-6,
            0.1,
            5,
            clip_threshold=2.0,
            bias_correction=True,
            delayed=True,
        ),
        lambda: oc.sophia(
            0.05, 0.9, 0.95, 1e-6, 0.1, gamma=0.5, clip_threshold=2.0, update_interval=5
        ),
    ),
}


def _trajectory(tx, dtype, apply=gx.apply_updates):
    return jax.tree.map(
        np.asarray, trajectory(tx, dtype, STEPS, EVERY, apply, seed=3, shapes=SHAPES)
    )


# the defaults rows clip nearly every coordinate (gamma h is small): slow; the
# curvature_matters rows, where about two thirds of the ratios are inside the clip, run always
SLOW = pytest.mark.slow


def _rows(table):
    return [pytest.param(n, marks=SLOW) if n == "defaults" else n for n in sorted(table)]


@pytest.mark.parametrize("name", _rows(OPTAX_ROWS))
def test_equals_optax_contrib_sophia_over_200_steps(name, dtype):
    make_gx, make_optax = OPTAX_ROWS[name]
    ours = _trajectory(_passing(make_gx(), value_fn=separable_objective), dtype)
    theirs = _trajectory(
        _passing(make_optax(), obj_fn=separable_objective), dtype, optax.apply_updates
    )
    start, _ = problem(dtype, 3, STEPS, SHAPES)
    for leaf in SHAPES:
        assert ours[leaf].dtype == np.dtype(dtype)
        assert np.all(ours[leaf][-1] != np.asarray(start[leaf]))  # the run moved
        np.testing.assert_array_equal(ours[leaf], theirs[leaf], err_msg=f"{name}: {leaf}")


TORCH_RECORDING = pathlib.Path(__file__).parent / "reference" / "torch_sophia.npz"
# the same configs as tests/reference/record_torch_sophia.py: SophiaH's clip p is
# clip_threshold, its eps floors h (gamma = 1), its decoupled decay is weight_decay
TORCH_ROWS = {
    "defaults": lambda: gx.sophia(0.06, 0.96, 0.99, 1.0, 1e-12, 0.0, 10, clip_threshold=0.01),
    "curvature_matters": lambda: gx.sophia(0.05, 0.9, 0.95, 1.0, 1e-3, 0.1, 5, clip_threshold=1.0),
}


@pytest.mark.parametrize("name", _rows(TORCH_ROWS))
def test_equals_the_recorded_pytorch_optimizer_sophiah(name, dtype):
    """pytorch-optimizer 4.1.0's SophiaH (torch 2.14) takes the paper's order (the fresh h
    in the refreshing step, no bias correction): gradxform's defaults. It rounds
    differently: ``m.lerp_(g, 1 - b1)`` for ``b1 m + (1 - b1) g`` and the decay as
    ``x * (1 - lr wd)`` before the step. Measured over 200 steps, of each leaf's scale:
    float32 4.2e-8 (defaults) and 9.3e-7 (curvature_matters), float64 0 and 2.4e-15."""
    recording = np.load(TORCH_RECORDING)
    ours = _trajectory(_passing(TORCH_ROWS[name](), value_fn=separable_objective), dtype)
    tol = 5e-6 if dtype == "float32" else 1e-13
    for leaf in SHAPES:
        theirs = recording[f"{name}/{dtype}/{leaf}"]
        assert theirs.shape == ours[leaf].shape
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(ours[leaf], theirs, rtol=tol, atol=tol * scale, err_msg=leaf)


def _injected(xp, x, g):
    """The estimate both sides inject (``xp``: NumPy or jax.numpy): negative in places."""
    return CURVATURE - xp.sin(x) + 0.2 * g


def _numpy_sophia(dtype, *, lr, b1, b2, gamma, eps, wd, k, clip, form, estimate):
    """The update written out (float64 NumPy): paper's Algorithm 3 order."""
    x0, noise = make_problem(3, STEPS, SHAPES)
    out = {}
    for leaf in SHAPES:
        x, n = np.asarray(x0[leaf], np.float64), np.asarray(noise[leaf], np.float64)
        m, h, xs = np.zeros_like(x), np.zeros_like(x), []
        for t in range(STEPS):
            g = CURVATURE * x + np.cos(x) + n[t]
            if t % k == 0:
                h = b2 * h + (1 - b2) * estimate(np, x, g)
            m = b1 * m + (1 - b1) * g
            den = np.maximum(gamma * h, eps) if form == "max" else gamma * h + eps
            x = x - lr * (np.clip(m / den, -clip, clip) + wd * x)
            xs.append(x)
        out[leaf] = np.stack(xs)[EVERY - 1 :: EVERY]
    return out


NUMPY_ROWS = {
    # the paper's form; the estimate negative in places (then eps and the clip decide)
    "paper": dict(form="max", eps=1e-3, estimate=_injected),
    # SophiaG's form: gamma h + eps with a never-negative estimate (B g g-like)
    "sophiag_sum": dict(form="sum", eps=1e-12, estimate=lambda xp, x, g: g * g),
}


@pytest.mark.parametrize("name", sorted(NUMPY_ROWS))
def test_paper_update_against_a_numpy_loop(name, dtype):
    """float64: to 1e-12 of each leaf's scale (measured 2e-16 and 1e-14). float32: the JAX
    run rounds every step (the injected sin, the EMAs, the division) where NumPy runs in
    float64: measured 2.4e-7 (paper) and 1.6e-6 (sum) of each leaf's scale, bound 1e-5.
    With gamma = 0.5 about two thirds of the coordinates' ratios are inside the clip."""
    row = NUMPY_ROWS[name]
    hp = dict(lr=0.05, b1=0.9, b2=0.95, gamma=0.5, eps=row["eps"], wd=0.1, k=5, clip=1.0)
    tx = gx.sophia(
        hp["lr"], hp["b1"], hp["b2"], hp["gamma"], hp["eps"], hp["wd"], hp["k"], form=row["form"]
    )
    estimate = row["estimate"]

    def update(g, state, x=None, **extra):
        given = jax.tree.map(lambda a, b: estimate(jnp, a, b), x, g)
        return tx.update(g, state, x, hessian_diag=given)

    ours = _trajectory(optax.GradientTransformationExtraArgs(tx.init, update), dtype)
    expected = _numpy_sophia(dtype, form=row["form"], estimate=estimate, **hp)
    tol = 1e-12 if dtype == "float64" else 1e-5
    for leaf in SHAPES:
        scale = np.abs(expected[leaf]).max()
        np.testing.assert_allclose(ours[leaf], expected[leaf], rtol=tol, atol=tol * scale)


def test_the_block_estimates_only_at_refreshes_inside_a_cond():
    x = {"w": jnp.ones(3)}
    tx = gx.sophia(0.1)
    jaxpr = str(
        jax.make_jaxpr(lambda s: tx.update(x, s, x, value_fn=separable_objective))(tx.init(x))
    )
    assert "cond[" in jaxpr
    calls = []

    def counted(p):
        jax.debug.callback(lambda: calls.append(1))
        return separable_objective(p)

    step = jax.jit(lambda s: tx.update(x, s, x, value_fn=counted))
    state = tx.init(x)
    for _ in range(12):  # refreshes at updates 1 and 11 (count % 10 == 0)
        _, state = step(state)
    jax.effects_barrier()
    assert len(calls) == 2
    # optax's name for the objective works the same
    by_value_fn, _ = step(tx.init(x))
    by_obj_fn, _ = jax.jit(lambda s: tx.update(x, s, x, obj_fn=counted))(tx.init(x))
    np.testing.assert_array_equal(by_value_fn["w"], by_obj_fn["w"])


def test_gnb_through_the_block_binds_the_batch_and_splits_the_key():
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), GNB_PARAMS)
    x = jnp.asarray(GNB_X, jnp.float32)
    tx = gx.ema_hessian_diagonal(0.75, 3, estimator="gnb", seed=7)

    @jax.jit
    def both(params, x):
        logits_fn = lambda p, batch: _logits(p, batch)  # noqa: E731
        h, state = tx.update(params, tx.init(params), params, logits_fn=logits_fn, batch=x)
        _, sub = jax.random.split(jax.random.PRNGKey(7))  # the block's first refresh key
        return h, state, curvature.gauss_newton_bartlett_diagonal(_logits, params, x, sub)

    h, state, expected = both(params, x)
    for k in params:
        np.testing.assert_allclose(h[k], 0.25 * expected[k], rtol=1e-6)
        assert np.all(np.asarray(expected[k]) > 0)
    assert np.all(np.asarray(state.key) != np.asarray(jax.random.PRNGKey(7)))


def test_hyperparameters_are_in_the_state_and_settable():
    x = {"w": jnp.ones(2)}
    state = gx.sophia(0.1).init(x)
    names = set(gx.get_hyperparams(state))
    assert names == {"learning_rate", "b1", "b2", "gamma", "eps", "weight_decay"} | {
        "update_period",
        "clip_threshold",
    }
    with pytest.raises(ValueError, match="update_period must be an integer >= 1"):
        gx.set_hyperparams(state, update_period=0)
    tx = gx.sophia(0.1, weight_decay=0.0)
    step = jax.jit(lambda s: tx.update(x, s, x, hessian_diag={"w": jnp.full(2, 4.0)}))
    u, _ = step(tx.init(x))
    np.testing.assert_allclose(u["w"], -0.1)  # m = 0.035, gamma h = 4e-4: clipped
    u, _ = step(gx.set_hyperparams(tx.init(x), gamma=10.0))  # same program
    np.testing.assert_allclose(u["w"], -0.1 * 0.035 / (10.0 * 0.04), rtol=1e-5)
    assert step._cache_size() == 1


BAD = [
    (lambda: gx.sophia(0.1, b1=1.0), ValueError, "b1 must be"),
    (lambda: gx.sophia(0.1, b2=-0.1), ValueError, "b2 must be"),
    (lambda: gx.sophia(-0.1), ValueError, "learning_rate must be"),
    (lambda: gx.sophia(0.1, weight_decay=-1.0), ValueError, "weight_decay must be"),
    (lambda: gx.sophia(0.1, gamma=-1.0), ValueError, "gamma must be"),
    (lambda: gx.sophia(0.1, eps=-1.0), ValueError, "eps must be"),
    (lambda: gx.sophia(0.1, update_period=0), ValueError, "update_period must be"),
    (lambda: gx.sophia(0.1, update_period=2.5), TypeError, "update_period must be"),
    (lambda: gx.sophia(0.1, clip_threshold=-1.0), ValueError, "clip_threshold must be"),
    (lambda: gx.sophia(0.1, estimator="newton"), ValueError, "estimator must be one of"),
    (lambda: gx.sophia(0.1, form="min"), ValueError, "form must be one of"),
    (lambda: gx.sophia(0.1, seed=1.5), TypeError, "seed must be"),
    (lambda: gx.sophia(0.1, delayed="yes"), TypeError, "delayed must be"),
]


def test_bad_input():
    for build, error, message in BAD:
        with pytest.raises(error, match=message):
            build()
    x = jnp.ones(2)
    with pytest.raises(ValueError, match="value_fn must be passed to update"):
        gx.sophia(0.1).update(x, gx.sophia(0.1).init(x), x)
    with pytest.raises(ValueError, match="logits_fn must be passed to update"):
        gx.sophia(0.1, estimator="gnb").update(x, gx.sophia(0.1).init(x), x)
    with pytest.raises(ValueError, match="num_probes must be"):
        curvature.hutchinson_diagonal(jnp.sum, x, jax.random.key(0), 0)


def test_checkpoint_resume_is_bitwise(tmp_path):
    """Three scanned steps, a save of (params, state), then three more from the restored
    pair equal three more from the live one; the restored state (the EMAs, the count, the
    estimator's PRNG key) is the saved one bit for bit."""
    tx = gx.sophia(0.05, gamma=0.5, update_period=2)

    def scanned(carry, noise_t):
        x, state = carry
        g = jax.tree.map(lambda a, n: grad(a, n, jnp.cos), x, noise_t)
        updates, state = tx.update(g, state, x, hessian_diag=jax.tree.map(jnp.abs, g))
        return (gx.apply_updates(x, updates), state), None

    run = jax.jit(lambda carry, noise: jax.lax.scan(scanned, carry, noise)[0])
    x0, noise = problem("float32", 3, 6, SHAPES)
    first, last = (jax.tree.map(lambda a, i=i: a[i : i + 3], noise) for i in (0, 3))
    saved = run((x0, tx.init(x0)), first)
    gx.checkpoint.save(tmp_path / "run.npz", saved)
    restored = gx.checkpoint.restore(tmp_path / "run.npz", like=(x0, tx.init(x0)))
    jax.tree.map(np.testing.assert_array_equal, restored, saved)
    jax.tree.map(np.testing.assert_array_equal, run(restored, last), run(saved, last))


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", pytest.param("float64", marks=SLOW)])
def test_dtype_rows(dtype):
    """The update has the parameter's dtype; h is at least float32 (bfloat16 would round
    b2 = 0.99 and the small estimates); one step against the formula in float64."""
    with jax.enable_x64(dtype == "float64"):
        x = {"w": jnp.asarray([0.5, -1.0, 2.0], dtype)}
        g = {"w": jnp.asarray([1.0, -0.25, 0.125], dtype)}
        tx = gx.sophia(0.1, gamma=2.0, weight_decay=0.0)
        state = tx.init(x)
        u, state = tx.update(g, state, x, value_fn=separable_objective)
        assert u["w"].dtype == jnp.dtype(dtype)
        xs = np.asarray(x["w"], np.float64)
        h = 0.01 * (CURVATURE - np.sin(xs))
        m = 0.035 * np.asarray(g["w"], np.float64)
        expected = -0.1 * np.clip(m / np.maximum(2.0 * h, 1e-8), -1, 1)
        tol = {"bfloat16": 2e-2, "float32": 1e-6, "float64": 1e-12}[dtype]
        np.testing.assert_allclose(
            np.asarray(u["w"], np.float64), expected, rtol=tol, atol=tol * 0.1
        )


SHARDED = {
    # the estimate given (elementwise: no collective)
    "sophia_given": lambda: (
        gx.sophia(0.05, gamma=0.5, update_period=2),
        {"hessian_diag": {k: np.full(s, 0.5, np.float32) for k, s in _SHARDED_SHAPES.items()}},
    ),
    # Hutchinson on a separable objective inside the update (probes drawn sharded)
    "sophia_hutchinson": lambda: (
        gx.sophia(0.05, gamma=0.5, update_period=2),
        {"value_fn": separable_objective},
    ),
}
_SHARDED_SHAPES = {"w1": (64, 24), "b1": (24,), "w2": (32, 8), "scale": (3,)}


@pytest.mark.slow
def test_sharded_like_one_device_without_collectives():
    assert_sharded_report(sharded_report("tests.test_sophia:SHARDED"), SHARDED)
