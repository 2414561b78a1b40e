"""Lion, signSGD, Adamax(W), NAdamW, AdaBelief, Yogi, RAdam, ADOPT against optax's.

optax (optax.contrib for ADOPT) is the oracle only: gradxform computes nothing
through it. Each row runs 200 steps (every row of a dtype in one jitted ``lax.scan``)
on a small mixed tree with a batched 3-D leaf, in float32 and float64, and the parameters
after every 20th step must be bitwise equal to optax's: the rows compute the same
expression in the same order as optax (the sign of the same interpolation for Lion, the same
``max(|g| + eps, b2 * u)`` for Adamax, optax's own ``adamw(nesterov=True)``
expression for NAdamW, the same centred moment with eps_root kept in it for AdaBelief),
except where NOT_BITWISE says why.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import problem
from tests.trajectories import trajectories

STEPS, EVERY = 200, 20
SHAPES = {"w": (4, 3), "b": (5,), "batched": (2, 3, 4), "s": ()}


def _decay_matrices(p):
    return {k: p[k].ndim >= 2 for k in p}


# name -> (gradxform optimizer, optax optimizer); the hyperparameters are not the
# defaults where the defaults would leave a branch untested
ROWS = {
    "lion": (lambda: gx.lion(1e-3), lambda: optax.lion(1e-3)),
    "lion_masked": (
        lambda: gx.lion(3e-3, 0.8, 0.95, 0.1, mask=_decay_matrices),
        lambda: optax.lion(3e-3, 0.8, 0.95, weight_decay=0.1, mask=_decay_matrices),
    ),
    "sign_sgd": (lambda: gx.sign_sgd(0.01), lambda: optax.sign_sgd(0.01)),
    "adamax": (lambda: gx.adamax(0.01), lambda: optax.adamax(0.01)),
    "adamax_eps": (
        lambda: gx.adamax(0.02, 0.8, 0.99, 1e-3),
        lambda: optax.adamax(0.02, 0.8, 0.99, 1e-3),
    ),
    "adamaxw": (
        lambda: gx.adamaxw(0.01, weight_decay=0.1),
        lambda: optax.adamaxw(0.01, weight_decay=0.1),
    ),
    "nadamw": (
        lambda: gx.nadamw(0.01, weight_decay=0.1),
        lambda: optax.nadamw(0.01, weight_decay=0.1),
    ),
    "nadamw_eps_root_masked": (
        lambda: gx.nadamw(0.01, 0.8, 0.99, 1e-6, 0.1, eps_root=1e-8, mask=_decay_matrices),
        lambda: optax.nadamw(0.01, 0.8, 0.99, 1e-6, 1e-8, weight_decay=0.1, mask=_decay_matrices),
    ),
    "adabelief": (lambda: gx.adabelief(0.01), lambda: optax.adabelief(0.01)),
    "adabelief_eps": (
        lambda: gx.adabelief(0.01, 0.8, 0.99, 1e-8, 1e-10),
        lambda: optax.adabelief(0.01, 0.8, 0.99, 1e-8, 1e-10),
    ),
    "radam": (lambda: gx.radam(0.01), lambda: optax.radam(0.01)),
    "radam_threshold": (
        lambda: gx.radam(0.01, 0.8, 0.9, 1e-6, 1e-8, threshold=6.0),
        lambda: optax.radam(0.01, 0.8, 0.9, 1e-6, 1e-8, threshold=6.0),
    ),
    # optax starts m at initial_accumulator_value too: with 0 both start at 0 (bitwise)
    "yogi_v0_zero": (
        lambda: gx.yogi(0.01, 0.8, 0.99, initial_accumulator_value=0.0),
        lambda: optax.chain(
            optax.scale_by_yogi(0.8, 0.99, 1e-3, initial_accumulator_value=0.0),
            optax.scale_by_learning_rate(0.01),
        ),
    ),
    "yogi": (lambda: gx.yogi(0.01), lambda: optax.yogi(0.01)),
    "adopt": (lambda: gx.adopt(0.01), lambda: optax.contrib.adopt(0.01)),
    "adopt_unclipped": (
        lambda: gx.adopt(0.003, 0.8, 0.99, 1e-4, clip_value=None),
        lambda: optax.contrib.adopt(0.003, 0.8, 0.99, 1e-4, use_clipping=False),
    ),
}


@functools.cache
def _optax_rows(dtype):
    """Every row's two trajectories on the shared problem (tests/problems.py) on this
    file's tree, seed 3: one compiled program per dtype (tests/trajectories.py)."""
    table = {}
    for name, (make_gx, make_optax) in ROWS.items():
        table[name, "gx"] = (make_gx(), gx.apply_updates)
        table[name, "optax"] = (make_optax(), optax.apply_updates)
    return trajectories(table, dtype, STEPS, EVERY, seed=3, shapes=SHAPES)


# Rows equal to optax up to rounding, not bitwise: in the scanned 200-step program XLA
# compiles optax's ``m / (1 - b1**t)`` as ``m * (1 / (1 - b1**t))`` (its HLO shows the
# scalar reciprocal) and ours as a division, 1 ulp apart at some steps (one jitted
# update alone is bitwise equal; with AdamaxW's weight decay in the chain it is
# bitwise). RAdam: gradxform divides by the rectified
# denominator, ``m / (d / r)``, where optax multiplies, ``r * m / d``, and computes
# rho_inf = 2 / (1 - b2) - 1 from the stored 1 - b2 where optax takes it in Python double.
# Relative to each leaf's largest magnitude.
# Yogi at optax's defaults: optax starts m at initial_accumulator_value (1e-6) as well as v,
# gradxform at 0 (the paper's m_0): measured 5.6e-7 (float32) and 5.8e-7 (float64) of each
# leaf's largest magnitude after 200 steps, so a 2e-6 bound in both dtypes; the same
# method from m_0 = 0 is the bitwise row yogi_v0_zero.
# ADOPT: optax switches the decays on with ``where(count > 0, b, 0)`` and then takes
# ``1 - b`` in the parameters' dtype; gradxform's EMA uses the complement rounded once
# from the exact 1 - b (in float32 1 - f32(0.9999) is 1.7e-4 off 1e-4). Measured
# 1.7e-6 of the leaf's largest magnitude in float32 (a 5e-6 bound), 8e-17 in float64;
# the unclipped row 1.1e-7 (float32). Both are left not bitwise also by the order of
# the fused clip and division (a few ulps with dyadic decays).
NOT_BITWISE = {"adamax", "adamax_eps", "radam", "radam_threshold", "yogi", "adopt"}
NOT_BITWISE |= {"adopt_unclipped"}
RTOL = {"float32": 1e-6, "float64": 1e-14}
ROW_RTOL = {("yogi", "float32"): 2e-6, ("yogi", "float64"): 2e-6, ("adopt", "float32"): 5e-6}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_equals_optax_over_200_steps(name, dtype):
    float_dtype = dtype  # conftest's: float32, and float64 (slow) with x64 on
    runs = _optax_rows(float_dtype)
    ours, theirs = runs[name, "gx"], runs[name, "optax"]
    start, _ = problem(float_dtype, 3, STEPS, SHAPES)
    for leaf in SHAPES:
        assert ours[leaf].dtype == np.dtype(float_dtype)
        assert ours[leaf].shape == (STEPS // EVERY, *SHAPES[leaf])
        # the run moved: a parity check of two optimizers that do nothing cannot fail
        assert np.all(ours[leaf][-1] != np.asarray(start[leaf]))
        if name not in NOT_BITWISE:
            np.testing.assert_array_equal(ours[leaf], theirs[leaf], err_msg=f"{name}: {leaf}")
        scale = np.max(np.abs(theirs[leaf]))
        rtol = ROW_RTOL.get((name, float_dtype), RTOL[float_dtype])
        np.testing.assert_allclose(ours[leaf], theirs[leaf], rtol=rtol, atol=rtol * scale)


def test_sign_sgd_is_a_fixed_step_along_the_sign():
    x = jnp.array([1.5, -2.0, 0.0, 3.0])
    g = jnp.array([-0.2, 7.0, 0.0, 1e-30])
    tx = gx.sign_sgd(0.25)
    u, _ = tx.update(g, tx.init(x), x)
    np.testing.assert_array_equal(np.asarray(u), [0.25, -0.25, 0.0, -0.25])


def test_lion_by_hand_two_steps():
    """Two steps against the formula written out in NumPy (float64)."""
    b1, b2, lr, wd = 0.5, 0.75, 0.1, 0.2
    x0 = np.array([1.0, -1.0, 2.0])
    gs = [np.array([2.0, -1.0, 0.5]), np.array([-3.0, -1.0, 0.25])]
    tx = gx.lion(lr, b1, b2, wd)
    x, state, m, xn = jnp.asarray(x0, jnp.float32), None, np.zeros(3), x0.copy()
    state = tx.init(x)
    for g in gs:
        u, state = tx.update(jnp.asarray(g, jnp.float32), state, x)
        x = gx.apply_updates(x, u)
        xn = xn - lr * (np.sign(b1 * m + (1 - b1) * g) + wd * xn)
        m = b2 * m + (1 - b2) * g
    np.testing.assert_allclose(np.asarray(x), xn, rtol=1e-6)


def test_adamax_by_hand_two_steps():
    b1, b2, eps, lr = 0.5, 0.75, 1e-3, 0.1
    gs = [np.array([2.0, -1.0, 0.5]), np.array([-3.0, -0.1, 0.25])]
    tx = gx.adamax(lr, b1, b2, eps)
    state = tx.init(jnp.zeros(3))
    m, u = np.zeros(3), np.zeros(3)
    for t, g in enumerate(gs, start=1):
        out, state = tx.update(jnp.asarray(g, jnp.float32), state)
        m = b1 * m + (1 - b1) * g
        u = np.maximum(np.abs(g) + eps, b2 * u)
        np.testing.assert_allclose(np.asarray(out), -lr * m / (1 - b1**t) / u, rtol=1e-6)


def test_scale_by_belief_is_its_composition_with_one_first_moment():
    # the block is the documented divide(...) of named blocks, keeping the one m both read
    b1, b2, eps, eps_root = 0.8, 0.9, 1e-3, 1e-6
    numerator = gx.chain(gx.ema_first_moment(b1), gx.bias_correct(b1))
    denominator = gx.chain(
        gx.ema_belief_moment(b1, b2, eps_root), gx.bias_correct(b2), gx.sqrt_with_eps(eps, None)
    )
    composed, block = gx.divide(numerator, denominator), gx.scale_by_belief(b1, b2, eps, eps_root)
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(4)}
    grads = jax.random.normal(jax.random.PRNGKey(0), (12, 10))

    def run(tx):
        def step(state, g):
            g = {"w": g[:6].reshape(3, 2), "b": g[6:]}
            out, state = tx.update(g, state)
            return state, out

        return jax.lax.scan(step, tx.init(params), grads)

    (state, outs), (_, want) = run(block), run(composed)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=4e-7, atol=0), outs, want)
    assert isinstance(state, gx.ScaleByBeliefState)
    moments = jax.tree.leaves((state.mu, state.nu))
    assert sum(x.nbytes for x in moments) == 8 * 10  # float32 m and s: 8 bytes per parameter


def test_hyperparameters_are_in_the_state_once():
    state = gx.lion(0.1).init({"w": jnp.zeros(2)})
    assert sorted(gx.get_hyperparams(state)) == ["b1", "b2", "learning_rate", "weight_decay"]
    state = gx.adamaxw(0.1).init({"w": jnp.zeros(2)})
    assert sorted(gx.get_hyperparams(state)) == ["b1", "b2", "eps", "learning_rate", "weight_decay"]
    # set without recompiling: a zero learning rate leaves the params where they are
    tx = gx.adamax(0.1)
    state = gx.set_hyperparams(tx.init(jnp.ones(2)), learning_rate=0.0)
    u, _ = jax.jit(tx.update)(jnp.ones(2), state)
    np.testing.assert_array_equal(np.asarray(u), [0.0, 0.0])


BAD = [
    (lambda: gx.lion(0.1, b1=1.0), "b1"),
    (lambda: gx.lion(0.1, b2=-0.1), "b2"),
    (lambda: gx.lion(-0.1), "learning_rate"),
    (lambda: gx.lion(0.1, weight_decay=-1.0), "weight_decay"),
    (lambda: gx.sign_sgd(-1.0), "learning_rate"),
    (lambda: gx.adamax(0.1, b1=1.5), "b1"),
    (lambda: gx.adamax(0.1, b2=1.0), "b2"),
    (lambda: gx.adamax(0.1, eps=-1e-8), "eps"),
    (lambda: gx.adamaxw(0.1, weight_decay=-0.1), "weight_decay"),
    (lambda: gx.nadamw(0.1, b1=1.0), "b1"),
    (lambda: gx.nadamw(0.1, weight_decay=-0.1), "weight_decay"),
    (lambda: gx.nadamw(-0.1), "learning_rate"),
    (lambda: gx.adabelief(0.1, b1=1.0), "b1"),
    (lambda: gx.adabelief(0.1, b2=-0.5), "b2"),
    (lambda: gx.adabelief(0.1, eps_root=-1.0), "eps_root"),
    (lambda: gx.radam(0.1, b2=1.0), "b2"),
    (lambda: gx.radam(0.1, threshold=3.0), "threshold"),
    (lambda: gx.radam(-0.1), "learning_rate"),
    (lambda: gx.yogi(0.1, b1=1.0), "b1"),
    (lambda: gx.yogi(0.1, b2=2.0), "b2"),
    (lambda: gx.yogi(0.1, eps=-1.0), "eps"),
    (lambda: gx.yogi(0.1, initial_accumulator_value=-1.0), "initial_value"),
    (lambda: gx.adopt(0.1, b1=1.0), "b1"),
    (lambda: gx.adopt(0.1, b2=1.0), "b2"),
    (lambda: gx.adopt(0.1, eps=-1.0), "eps"),
    (lambda: gx.adopt(0.1, clip_value=-1.0), "clip_value"),
]


@pytest.mark.parametrize("index", range(len(BAD)))
def test_bad_input_raises_when_built(index):
    build, name = BAD[index]
    with pytest.raises(ValueError, match=f"{name} must be"):
        build()
