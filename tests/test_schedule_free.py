"""schedule_free, its aliases and schedule_free_eval_params against independent references.

* optax.contrib 0.2.8 (oracle only) over 200 scanned steps on the shared mixed tree
  with a batched 3-D leaf, float32 and float64. The wrapper computes optax's
  expression and is bitwise equal on every leaf of rank >= 1, SGD and a wrapped
  optax base alike, with ``warmup="optax"`` for optax's warmup (the step's rate one
  count behind the weights'). Not bitwise, within rounding: the 0-d leaf, where
  XLA compiles optax's ``(1 - c) * ((y - (1 - b1) z) / b1)`` (b1 a constant) as
  ``(1 - c) * ((y - (1 - b1) z) * (1 / b1))`` but on arrays as
  ``(y - (1 - b1) z) * ((1 - c) * (1 / b1))``, the form gradxform computes on every
  leaf; and AdamW, whose optax base multiplies by ``1 / (sqrt(v) + eps)`` where
  gradxform divides (as torch does). Measured 5e-7 (float32) and 1e-15 (float64)
  of each leaf's largest magnitude.
* the ``schedulefree`` torch package 1.4.1 (SGDScheduleFree, AdamWScheduleFree,
  AdamWScheduleFreeReference with decay_at_z), recorded in
  tests/reference/schedulefree.npz by tests/reference/record_schedulefree.py: the
  params every 20 steps, and x (through ``eval()``) and z after the last. The
  gradient is recomputed here (XLA's cosine against torch's) and the package
  updates y in place (a lerp and an add) where gradxform recovers x: measured
  8e-6 (y) and 2e-5 (x, z) of the leaf's largest magnitude in float32 (AdamW),
  1.3e-14 in float64.
  ``warmup="optax"`` is 1.6e-2 away from the package: the option matters.
* the recurrences written out here in NumPy (x, z and y kept explicitly, the
  weights summed in Python), with warmup, r, weight_lr_power, weight decay at y or
  z, and b1 changed between steps.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib as oc
import pytest

import gradxform as gx
from tests.helpers import (
    DTYPES,
    TOLERANCE,
    assert_checkpoint_resume_is_bitwise,
    assert_sharded_report,
    problem,
    sharded_report,
    trajectory,
)
from tests.problems import grad

STEPS, EVERY, SEED = 200, 20, 3
SHAPES = {"w": (4, 3), "b": (5,), "batched": (2, 3, 4), "s": ()}
REFERENCE = pathlib.Path(__file__).parent / "reference" / "schedulefree.npz"


def _optax_adam_base(lr):
    return optax.chain(
        optax.scale_by_rms(0.999, 1e-8, eps_in_sqrt=False, bias_correction=True),
        optax.scale_by_learning_rate(lr),
    )


# name -> (gradxform, optax.contrib); the wrapper row wraps the same optax base on both
# sides, so that it checks the wrapper alone
OPTAX_ROWS = {
    "sgd": (lambda: gx.schedule_free_sgd(0.1), lambda: oc.schedule_free_sgd(0.1)),
    "sgd_warmup_decay": (
        lambda: gx.schedule_free_sgd(0.1, 10, 0.8, 0.01, 1.0, warmup="optax"),
        lambda: oc.schedule_free_sgd(0.1, 10, 0.8, 0.01, 1.0),
    ),
    "wrapper": (
        lambda: gx.schedule_free(_optax_adam_base(0.01), 0.01, 0.85, 3.0),
        lambda: oc.schedule_free(_optax_adam_base(0.01), 0.01, 0.85, 3.0),
    ),
    "adamw": (
        lambda: gx.schedule_free_adamw(0.01, weight_decay=0.1),
        lambda: oc.schedule_free_adamw(0.01, weight_decay=0.1),
    ),
    "adamw_warmup": (
        lambda: gx.schedule_free_adamw(0.01, 20, 0.9, 0.99, 1e-6, 0.1, warmup="optax"),
        lambda: oc.schedule_free_adamw(0.01, 20, 0.9, 0.99, 1e-6, 0.1),
    ),
}
BITWISE_RANK_1 = {"sgd", "sgd_warmup_decay", "wrapper"}
RTOL = {"float32": 1e-6, "float64": 3e-15}


def _relative(ours, theirs):
    return float(np.max(np.abs(ours - theirs))) / max(float(np.max(np.abs(theirs))), 1e-30)


def _run(tx, dtype, apply=gx.apply_updates, steps=STEPS):
    """y every EVERY steps, and the final params and state (one jitted step, a Python loop)."""
    params, noise = problem(dtype, SEED, steps, SHAPES)

    @jax.jit
    def step(x, state, noise_t):
        g = jax.tree.map(lambda p, n: grad(p, n, jnp.cos), x, noise_t)
        updates, state = tx.update(g, state, x)
        return apply(x, updates), state

    x, state, ys = params, tx.init(params), []
    for t in range(steps):
        x, state = step(x, state, {k: v[t] for k, v in noise.items()})
        if (t + 1) % EVERY == 0:
            ys.append(x)
    return jax.tree.map(lambda *a: np.stack(a), *ys), x, state


# the plain rows also run in the slow loop (the float32 loop keeps CI time)
SLOW_ROWS = {"sgd", "adamw_defaults"}


def _rows(table):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_ROWS else n for n in sorted(table)]


@pytest.mark.parametrize("name", _rows(OPTAX_ROWS))
def test_equals_optax_contrib_over_200_steps(name, dtype):
    make_gx, make_optax = OPTAX_ROWS[name]
    ours = trajectory(make_gx(), dtype, STEPS, EVERY, seed=SEED, shapes=SHAPES)
    theirs = trajectory(
        make_optax(), dtype, STEPS, EVERY, optax.apply_updates, seed=SEED, shapes=SHAPES
    )
    start, _ = problem(dtype, SEED, STEPS, SHAPES)
    for k in SHAPES:
        a, b = np.asarray(ours[k]), np.asarray(theirs[k])
        assert a.dtype == np.dtype(dtype) and a.shape == (STEPS // EVERY, *SHAPES[k])
        assert np.all(a[-1] != np.asarray(start[k]))  # it moved
        if name in BITWISE_RANK_1 and a.ndim > 1:
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: {k}")
        assert _relative(a, b) <= RTOL[dtype], (name, k, _relative(a, b))


def test_eval_params_equal_optax_contrib(dtype):
    """x after 60 steps, from our state and from optax's (optax forms 1 - b1 from the
    rounded b1 in the params' dtype, gradxform keeps the complement of the exact 1 - b1:
    1 ulp of 0.1 in float32; the same in float64, bitwise)."""
    _, y, state = _run(gx.schedule_free_sgd(0.1, 10, warmup="optax"), dtype, steps=60)
    _, y_o, state_o = _run(oc.schedule_free_sgd(0.1, 10), dtype, optax.apply_updates, 60)
    ours, theirs = (
        gx.schedule_free_eval_params(state, y),
        oc.schedule_free_eval_params(state_o, y_o),
    )
    for k in SHAPES:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=RTOL[dtype], atol=RTOL[dtype])
        assert ours[k].dtype == np.dtype(dtype)
        assert np.abs(np.asarray(ours[k]) - np.asarray(y[k])).max() > 1e-3  # x is not y


# name in the recording -> gradxform
TORCH_ROWS = {
    "sgd_warmup_decay": lambda: gx.schedule_free_sgd(0.1, 10, 0.9, 0.01),
    "sgd_r": lambda: gx.schedule_free_sgd(0.05, None, 0.8, None, 1.0, r=1.0),
    "adamw_warmup_decay": lambda: gx.schedule_free_adamw(0.01, 20, weight_decay=0.1),
    "adamw_defaults": lambda: gx.schedule_free_adamw(),
    "adamw_decay_at_z": lambda: gx.schedule_free_adamw(0.01, 20, weight_decay=0.1, decay_at="z"),
}
TORCH_RTOL = {"float32": 5e-5, "float64": 5e-14}


@pytest.fixture(scope="module")
def recorded():
    return dict(np.load(REFERENCE))


@pytest.mark.parametrize("name", _rows(TORCH_ROWS))
def test_equals_the_schedulefree_package(name, dtype, recorded):
    ys, y, state = _run(TORCH_ROWS[name](), dtype)
    x = gx.schedule_free_eval_params(state, y)
    z = state.inner_state.z
    for k in SHAPES:
        for ours, key in ((ys[k], "y"), (x[k], "x"), (z[k], "z")):
            ref = recorded[f"{name}/{dtype}/{k}/{key}"]
            assert np.asarray(ours).shape == ref.shape, (name, k, key)
            assert _relative(np.asarray(ours), ref) <= TORCH_RTOL[dtype], (name, k, key)


def test_optax_warmup_is_one_step_behind_the_package(recorded):
    """The option matters: optax's first step has rate 0, the package's lr / W."""
    ys, _, _ = _run(gx.schedule_free_adamw(0.01, 20, weight_decay=0.1, warmup="optax"), "float32")
    gap = max(_relative(ys[k], recorded[f"adamw_warmup_decay/float32/{k}/y"]) for k in SHAPES)
    assert gap > 1e-3


def _numpy_schedule_free(gs, y0, lrs, b1s, p, r, wd, decay_at="y"):
    """The paper's recurrences in float64 with x, y, z kept explicitly (schedule-free SGD)."""
    x, z, y = y0.copy(), y0.copy(), y0.copy()
    weight_sum, lr_max, ys, xs = 0.0, 0.0, [], []
    for t, (g, lr, b1) in enumerate(zip(gs, lrs, b1s), start=1):
        lr_max = max(lr_max, lr)
        weight = t**r * lr_max**p
        weight_sum += weight
        c = weight / weight_sum if weight_sum else 0.0
        z = z - lr * (g(y) + wd * (y if decay_at == "y" else z))
        x = (1 - c) * x + c * z
        y = b1 * x + (1 - b1) * z
        ys.append(y)
        xs.append(x)
    return ys, xs


@pytest.mark.parametrize(
    "options",
    [
        {"warmup_steps": 3, "weight_decay": 0.1},
        {"r": 1.5, "weight_lr_power": 1.0, "weight_decay": 0.2, "decay_at": "z"},
    ],
    ids=["warmup_decay_at_y", "r_decay_at_z"],
)
def test_by_hand_against_the_recurrences(options, x64):
    y0 = np.array([1.0, -2.0, 0.5])

    def g(y):
        return 2.0 * y + np.sin(y)

    lr, steps, W = 0.1, 8, options.get("warmup_steps")
    lrs = [lr * min(t, W) / W if W else lr for t in range(1, steps + 1)]
    b1s = [0.9] * 4 + [0.6] * 4  # b1 changed between steps 4 and 5
    ys, xs = _numpy_schedule_free(
        [g] * steps,
        y0,
        lrs,
        b1s,
        options.get("weight_lr_power", 2.0),
        options.get("r", 0.0),
        options["weight_decay"],
        options.get("decay_at", "y"),
    )
    tx = gx.schedule_free_sgd(lr, b1=0.9, **options)
    y = jnp.asarray(y0)
    state = tx.init(y)
    step = jax.jit(tx.update)
    for t in range(steps):
        if t == 4:
            state = gx.set_hyperparams(state, b1=0.6)
        u, state = step(jnp.asarray(g(np.asarray(y))), state, y)
        y = gx.apply_updates(y, u)
        np.testing.assert_allclose(np.asarray(y), ys[t], rtol=1e-13)
        np.testing.assert_allclose(gx.schedule_free_eval_params(state, y), xs[t], rtol=1e-13)


def test_eval_params_in_a_partition_and_before_any_update():
    p = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    tx = gx.partition(
        {"sf": gx.schedule_free_sgd(0.5), "plain": gx.sgd(0.5)}, {"a": "sf", "b": "plain"}
    )
    state = tx.init(p)
    before = gx.schedule_free_eval_params(state, p)
    jax.tree.map(np.testing.assert_array_equal, before, p)  # y = z = x, exactly
    alone = gx.schedule_free_sgd(0.5)
    a_state = alone.init(p["a"])
    y, y_a = p, p["a"]
    for gv in ([1.0, -1.0], [0.5, 2.0], [-1.0, 0.0]):
        u, state = tx.update({"a": jnp.array(gv), "b": jnp.array([1.0])}, state, y)
        y = gx.apply_updates(y, u)
        u_a, a_state = alone.update(jnp.array(gv), a_state, y_a)
        y_a = gx.apply_updates(y_a, u_a)
    x = gx.schedule_free_eval_params(state, y)
    np.testing.assert_array_equal(x["a"], gx.schedule_free_eval_params(a_state, y_a))
    np.testing.assert_array_equal(x["b"], y["b"])  # a leaf no schedule-free state holds
    with pytest.raises(ValueError, match="opt_state must be an optimizer state holding"):
        gx.schedule_free_eval_params(gx.adam(0.1).init(p), p)


def test_hyperparameters_are_in_the_store_once():
    state = gx.schedule_free_adamw(0.01, weight_decay=1e-4).init({"w": jnp.zeros(2)})
    names = ["b1", "b2", "eps", "learning_rate", "r", "weight_decay", "weight_lr_power"]
    assert sorted(gx.get_hyperparams(state)) == names
    state = gx.schedule_free_sgd(0.01, 5, warmup="optax").init({"w": jnp.zeros(2)})
    assert sorted(gx.get_hyperparams(state)) == [
        "b1",
        "learning_rate",
        "r",
        "weight_learning_rate",
        "weight_lr_power",
    ]
    # a zero learning rate, set without rebuilding, leaves z and the params where they are
    tx = gx.schedule_free_adamw(0.1)
    y = jnp.ones(2)
    state = gx.set_hyperparams(tx.init(y), learning_rate=0.0)
    u, state = jax.jit(tx.update)(jnp.ones(2), state, y)
    np.testing.assert_array_equal(np.asarray(u), [0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(state.inner_state.z), [1.0, 1.0])


BAD = [
    (lambda: gx.schedule_free_adamw(b1=0.0), "b1"),
    (lambda: gx.schedule_free_adamw(b1=1.0), "b1"),
    (lambda: gx.schedule_free_adamw(b2=1.0), "b2"),
    (lambda: gx.schedule_free_adamw(weight_decay=-0.1), "weight_decay"),
    (lambda: gx.schedule_free_adamw(-1.0), "learning_rate"),
    (lambda: gx.schedule_free_adamw(eps=-1.0), "eps"),
    (lambda: gx.schedule_free_sgd(weight_lr_power=-1.0), "weight_lr_power"),
    (lambda: gx.schedule_free_sgd(r=-0.5), "r"),
    (lambda: gx.schedule_free_sgd(weight_decay=-1.0), "weight_decay"),
    (lambda: gx.schedule_free_sgd(warmup_steps=0), "warmup_steps"),
    (lambda: gx.schedule_free_sgd(lambda n: 0.1, warmup_steps=5), "learning_rate"),
    (lambda: gx.schedule_free_sgd(warmup="linear"), "warmup"),
    (lambda: gx.schedule_free_sgd(decay_at="x"), "decay_at"),
    (lambda: gx.schedule_free(gx.sgd(0.1), 0.1, base_params="x"), "base_params"),
    (lambda: gx.schedule_free(gx.sgd(0.1), 0.1, b1=1.5), "schedule_free_b1"),
    (lambda: gx.schedule_free(gx.sgd(0.1), 0.1, state_dtype=jnp.int32), "state_dtype"),
]


@pytest.mark.parametrize("index", range(len(BAD)))
def test_bad_input_raises_when_built(index):
    build, name = BAD[index]
    with pytest.raises((ValueError, TypeError), match=f"{name} must be"):
        build()


def test_update_without_params_names_them():
    tx = gx.schedule_free_sgd(0.1)
    with pytest.raises(ValueError, match="params must be given"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_checkpoint_resume_is_bitwise(tmp_path):
    p0, noise = problem("float32", SEED, 6, SHAPES)
    tx = gx.schedule_free_adamw(0.01, 4, weight_decay=0.1, r=0.5)

    @jax.jit
    def step(p, s, n):
        u, s = tx.update(jax.tree.map(lambda a, b: grad(a, b, jnp.cos), p, n), s, p)
        return gx.apply_updates(p, u), s

    assert_checkpoint_resume_is_bitwise(step, tx.init(p0), p0, noise, tmp_path, 3, 6)


def test_dtype_rows():
    """Each floating dtype: the update and z in the params' dtype, within that dtype's
    tolerance of the float64 run (bfloat16 and float16 keep z in float32 here: x is
    recovered from y and z, which a 16-bit z rounds too coarsely)."""
    g0 = np.random.default_rng(5).standard_normal((3, 4))
    outs = {}
    for dtype in [d for d in DTYPES if d != "complex64"]:
        with jax.enable_x64(dtype == "float64"):
            narrow = dtype in ("bfloat16", "float16")
            tx = gx.schedule_free_adamw(0.05, 2, state_dtype=jnp.float32 if narrow else None)
            y = jnp.asarray(g0, dtype)
            state, update = tx.init(y), jax.jit(tx.update)
            for _ in range(3):
                u, state = update(jnp.cos(y), state, y)
                assert u.dtype == jnp.dtype(dtype)
                y = gx.apply_updates(y, u)
            assert state.inner_state.z.dtype == jnp.dtype("float32" if narrow else dtype)
            outs[dtype] = np.asarray(gx.schedule_free_eval_params(state, y), np.float64)
    for dtype, x in outs.items():
        np.testing.assert_allclose(x, outs["float64"], atol=TOLERANCE[dtype] * 2)


SHARDED = {
    "schedule_free_adamw": lambda: gx.schedule_free_adamw(0.01, 2, weight_decay=0.1),
    "schedule_free_sgd": lambda: gx.schedule_free_sgd(0.1, r=1.0, decay_at="z", weight_decay=0.1),
}


@pytest.mark.slow
def test_sharded_runs_equal_one_device_without_collectives():
    """Elementwise: z, v and the scalar weights shard like the params, no collective."""
    report = sharded_report("tests.test_schedule_free:SHARDED")
    assert_sharded_report(report, SHARDED, max_abs_diff=1e-6)
