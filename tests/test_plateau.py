"""reduce_on_plateau against recorded torch ReduceLROnPlateau, optax, and a naive loop.

Oracles: torch's ``lr / initial_lr`` after each ``scheduler.step(loss)`` on six
recorded loss sequences of 400 steps (positive, constant, negative; recorded by
tests/reference/record_torch.py, so CI needs no torch); optax's
``contrib.reduce_on_plateau`` where it decides the same way; a float64 Python
loop of the documented rule for a loss that changes sign; the uninterrupted run
(resume); the float64 run (dtypes); a single device (sharding).
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import assert_sharded_report, sharded_report
from tests.reference.torch_configs import PLATEAU_CONFIGS, plateau_kwargs

RECORDED = np.load(pathlib.Path(__file__).parent / "reference" / "torch_lr_schedulers.npz")
SEQUENCES = sorted(k.removeprefix("losses/") for k in RECORDED.files if k.startswith("losses/"))
LOSSES = {name: RECORDED[f"losses/{name}"] for name in SEQUENCES}


def scan_scales(tx, losses, dtype=jnp.float32):
    """``state.scale`` after each update fed ``value=losses[t]``, for a batch of sequences.

    One jitted scan, vmapped over the rows of ``losses``.
    """
    params = jnp.zeros((), dtype)

    def one(losses):
        def step(state, loss):
            _, state = tx.update(jnp.ones((), dtype), state, params, value=loss)
            return state, state.scale

        return jax.lax.scan(step, tx.init(params), losses)[1]

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(losses)))


@functools.cache
def ours(config: str) -> dict:
    """Our scales for every recorded sequence under a torch config, one compile per config."""
    lr, kwargs = PLATEAU_CONFIGS[config]
    tx = gx.reduce_on_plateau(**plateau_kwargs(lr, kwargs))
    scales = scan_scales(tx, np.stack([LOSSES[name] for name in SEQUENCES]))
    return dict(zip(SEQUENCES, scales))


def torch_reference(config: str, name: str) -> np.ndarray:
    """torch's scales: mode "min" on the loss, or for a negative loss in rel mode (where
    torch's threshold points the wrong way) mode "max" on the negated loss, which is
    gradxform's |best| rule."""
    rel = PLATEAU_CONFIGS[config][1].get("threshold_mode", "rel") == "rel"
    mode = "max" if rel and np.all(LOSSES[name] < 0) else "min"
    return RECORDED[f"plateau/{config}/{name}/{mode}"]


def assert_same_decisions(got, want, rtol, context):
    """The reductions happen at the same updates, and the scales agree to rtol."""
    np.testing.assert_array_equal(
        np.flatnonzero(np.diff(got)), np.flatnonzero(np.diff(want)), err_msg=context
    )
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0, err_msg=context)


@pytest.mark.parametrize("name", SEQUENCES)
@pytest.mark.parametrize("config", sorted(PLATEAU_CONFIGS))
def test_equals_recorded_torch_reduce_lr_on_plateau(config, name):
    """Float32 scales: every reduction at torch's update; the values to 1e-6 (torch
    multiplies Python floats, gradxform float32: up to 27 roundings of 2**-24)."""
    want = torch_reference(config, name)
    assert len(want) == 400
    assert_same_decisions(ours(config)[name], want, 1e-6, f"{config} {name}")


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(PLATEAU_CONFIGS))
def test_equals_recorded_torch_in_float64(config, x64):
    lr, kwargs = PLATEAU_CONFIGS[config]
    tx = gx.reduce_on_plateau(**plateau_kwargs(lr, kwargs))
    losses = np.stack([LOSSES[name] for name in SEQUENCES]).astype(np.float64)
    for name, got in zip(SEQUENCES, scan_scales(tx, losses, jnp.float64)):
        assert got.dtype == np.float64
        assert_same_decisions(got, torch_reference(config, name), 1e-14, f"{config} {name}")


def test_negative_losses_reduce_where_torch_rel_never_does():
    """optax issues 221/679, PR 1767, pytorch 38622: torch's rel threshold lies above a
    negative best, so a constant negative loss counts as improving forever. gradxform's
    reduces it as it reduces the constant positive loss."""
    torch_min = RECORDED["plateau/defaults/negative_constant/min"]
    assert np.all(torch_min == 1.0)  # torch never reduces
    scales = ours("defaults")
    np.testing.assert_array_equal(scales["negative_constant"], scales["constant"])
    assert scales["negative_constant"][11] == np.float32(0.1)  # patience 10: the 12th update
    # a slowly worsening negative loss is no improvement either
    worse = -1.0 + 1e-5 * np.arange(50, dtype=np.float32)
    got = scan_scales(gx.reduce_on_plateau(patience=3), worse[None])[0]
    assert got[3] == 1.0 and got[4] == np.float32(0.1)


def naive_scales(losses, factor, patience, threshold, threshold_mode, cooldown, min_scale, eps):
    """The documented rule in float64 Python: the slow path that pins the fast one."""
    best, bad, cool, scale, out = np.inf, 0, 0, 1.0, []
    for v in map(float, losses):
        margin = threshold * abs(best) if threshold_mode == "rel" else threshold
        if v < (best if np.isinf(best) else best - margin):
            best, bad = v, 0
        else:
            bad += 1
        if cool > 0:
            cool, bad = cool - 1, 0
        if bad > patience:
            new = max(scale * factor, min_scale)
            scale = new if scale - new > eps else scale
            cool, bad = cooldown, 0
        out.append(scale)
    return np.asarray(out)


@pytest.mark.parametrize("threshold_mode", ["rel", "abs"])
def test_a_loss_changing_sign_follows_the_naive_rule(threshold_mode):
    rng = np.random.default_rng(3)
    t = np.arange(400)
    losses = (0.8 - t / 200 + 0.01 * rng.normal(size=400)).astype(np.float32)
    losses[200:] = losses[200] + 0.02 * rng.normal(size=200).astype(np.float32)  # a plateau
    kwargs = dict(factor=0.5, patience=4, threshold=1e-2, threshold_mode=threshold_mode)
    kwargs.update(cooldown=2, min_scale=0.05, eps=1e-8)
    got = scan_scales(gx.reduce_on_plateau(**kwargs), losses[None])[0]
    want = naive_scales(losses, **kwargs)
    assert np.any(np.diff(want) != 0)
    assert_same_decisions(got, want, 1e-6, threshold_mode)


OPTAX_CONFIGS = {  # ours -> optax's: optax reduces after `patience` bad updates, torch after +1
    "rel": ({"patience": 4, "threshold": 1e-3}, {"patience": 5, "rtol": 1e-3}),
    "abs_cooldown_floor": (
        {"factor": 0.5, "patience": 2, "threshold": 1e-3, "threshold_mode": "abs", "cooldown": 3}
        | {"min_scale": 0.01},
        {"factor": 0.5, "patience": 3, "rtol": 0.0, "atol": 1e-3, "cooldown": 3, "min_scale": 0.01},
    ),
}


@pytest.mark.parametrize("config", sorted(OPTAX_CONFIGS))
def test_equals_optax_contrib_on_positive_losses(config):
    """Bitwise on the positive sequences (the same float32 products), with eps=0 (optax
    has none) and optax's patience one more than ours."""
    kwargs, optax_kwargs = OPTAX_CONFIGS[config]
    positive = [n for n in SEQUENCES if np.all(LOSSES[n] > 0)]
    losses = np.stack([LOSSES[n] for n in positive])
    got = scan_scales(gx.reduce_on_plateau(**kwargs, eps=0.0), losses)
    want = scan_scales(optax.contrib.reduce_on_plateau(**optax_kwargs), losses)
    assert np.any(np.diff(want) != 0)
    np.testing.assert_array_equal(got, want)


def test_optax_differs_on_negative_losses_and_patience_zero():
    """What the docstring says of optax 0.2.x: a constant negative loss never reduces its
    scale (torch's rel form), and with patience=0 it reduces at every improving update
    and never on a plateau."""
    rows = np.stack(
        [-np.ones(8), np.ones(8), np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.3])]
    ).astype(np.float32)
    theirs = scan_scales(optax.contrib.reduce_on_plateau(patience=1), rows)
    assert np.all(theirs[0] == 1.0) and theirs[1][1] == np.float32(0.1)
    theirs = scan_scales(optax.contrib.reduce_on_plateau(patience=0), rows)
    assert np.all(theirs[1] == theirs[1][0]) and np.all(np.diff(theirs[2]) < 0)
    mine = scan_scales(gx.reduce_on_plateau(patience=0), rows)
    np.testing.assert_array_equal(mine[0], mine[1])  # the plateaus reduce, either sign
    np.testing.assert_allclose(mine[0], 0.1 ** np.arange(8), rtol=1e-6)
    assert np.all(mine[2] == 1.0)  # improving: never reduced


def test_updates_are_scaled_and_nan_values_count_as_bad():
    tx = gx.chain(gx.sgd(0.5), gx.reduce_on_plateau(factor=0.25, patience=0))
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}
    grads = {"w": jnp.array([0.5, 0.25]), "b": jnp.array(-1.0)}
    update = jax.jit(tx.update)
    state = tx.init(params)
    out = []
    for value in [2.0, jnp.nan, 1.0]:  # NaN is not better: torch's float('nan') < best is False
        updates, state = update(grads, state, params, value=value)
        out.append((updates, state[1]))
    for (updates, s), scale in zip(out, [1.0, 0.25, 0.25]):
        assert float(s.scale) == scale
        for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
            np.testing.assert_array_equal(u, -0.5 * g * np.float32(scale))
    assert float(out[1][1].best_value) == 2.0 and float(out[2][1].best_value) == 1.0
    assert int(out[2][1].count) == 3 and update._cache_size() == 1


def test_hyperparams_live_in_the_state_and_set_without_recompiling():
    tx = gx.reduce_on_plateau(factor=0.5, patience=5)
    params = jnp.zeros(2)
    state = tx.init(params)
    assert sorted(gx.get_hyperparams(state)) == [
        "cooldown",
        "eps",
        "factor",
        "min_scale",
        "patience",
        "threshold",
    ]
    assert optax.tree_utils.tree_get(state, "scale") == 1.0
    update = jax.jit(tx.update)
    state = gx.set_hyperparams(state, patience=0, factor=0.2)
    for value in [1.0, 1.0]:
        _, state = update(jnp.ones(2), state, params, value=value)
    assert float(state.scale) == np.float32(0.2) and update._cache_size() == 1
    with pytest.raises(ValueError, match=r"^factor must be a real number in \(0, 1\); got 1.5$"):
        gx.set_hyperparams(state, factor=1.5)
    with pytest.raises(TypeError, match="^patience must be an integer >= 0; got 0.5$"):
        gx.set_hyperparams(state, patience=0.5)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"factor": 0.0}, ValueError, r"factor must be a real number in \(0, 1\); got 0.0"),
        ({"factor": 1.0}, ValueError, r"factor must be a real number in \(0, 1\); got 1.0"),
        ({"patience": -1}, ValueError, "patience must be an integer >= 0; got -1"),
        ({"patience": 2.5}, TypeError, "patience must be an integer >= 0; got 2.5"),
        ({"cooldown": -2}, ValueError, "cooldown must be an integer >= 0; got -2"),
        ({"threshold": -1e-4}, ValueError, "threshold must be a real number >= 0; got -0.0001"),
        ({"threshold": 1.0}, ValueError, r"threshold must be a real number in \[0, 1\); got 1.0"),
        ({"threshold_mode": "max"}, ValueError, "threshold_mode must be one of 'rel', 'abs'"),
        ({"min_scale": -0.1}, ValueError, "min_scale must be a real number >= 0; got -0.1"),
        ({"eps": float("nan")}, ValueError, "eps must be a real number >= 0; got nan"),
        ({"factor": "0.1"}, TypeError, "factor must be a real number, a real scalar array or"),
    ],
)
def test_bad_arguments_raise_when_built(kwargs, error, message):
    with pytest.raises(error, match=f"^{message}"):
        gx.reduce_on_plateau(**kwargs)


def test_abs_mode_takes_any_threshold():
    gx.reduce_on_plateau(threshold=5.0, threshold_mode="abs")


def test_a_missing_or_non_scalar_value_is_an_error_when_traced():
    tx = gx.chain(gx.adam(0.1), gx.reduce_on_plateau())
    state = tx.init(jnp.zeros(3))
    with pytest.raises(TypeError, match=r"^value must be given to reduce_on_plateau's update"):
        jax.jit(tx.update)(jnp.ones(3), state)
    with pytest.raises(TypeError, match=r"^value must be a real scalar \(the monitored loss\)"):
        jax.jit(tx.update)(jnp.ones(3), state, value=jnp.ones(2))


# --- resume, dtypes, sharding ---------------------------------------------------------

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -0.25, 2.0])}


def make_tx():
    return gx.chain(gx.adam(0.05), gx.reduce_on_plateau(factor=0.5, patience=2, cooldown=1))


@functools.cache
def resume_step():
    tx = make_tx()

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(lambda p: sum(jnp.sum(x**2) for x in p.values()))(params)
        updates, state = tx.update(grads, state, params, value=jnp.maximum(loss, 0.5))
        return gx.apply_updates(params, updates), state

    return step


def run_steps(params, state, n):
    for _ in range(n):
        params, state = resume_step()(params, state)
    return params, state


def assert_bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


def test_resume_through_gx_checkpoint_is_bitwise(tmp_path):
    params, state = run_steps(PARAMS, make_tx().init(PARAMS), 7)
    gx.checkpoint.save(tmp_path / "state.npz", state)
    gx.checkpoint.save(tmp_path / "params.npz", params)
    want = run_steps(params, state, 40)
    assert float(want[1][1].scale) < 1.0  # the run reduced after the checkpoint
    restored = gx.checkpoint.restore(tmp_path / "state.npz", like=make_tx().init(PARAMS))
    params = gx.checkpoint.restore(tmp_path / "params.npz", like=PARAMS)
    assert_bitwise(run_steps(params, restored, 40), want)


def test_resume_through_orbax_is_bitwise(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    params, state = run_steps(PARAMS, make_tx().init(PARAMS), 7)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
        checkpointer.wait_until_finished()
        target = {"params": PARAMS, "opt_state": make_tx().init(PARAMS)}
        restored = checkpointer.restore(tmp_path / "ckpt", target)
    want = run_steps(params, state, 40)
    assert_bitwise(run_steps(restored["params"], restored["opt_state"], 40), want)


DTYPE_LOSSES = [3.0, 2.0, 2.5, 2.5, 1.0, 1.5]  # reductions at the 3rd, 4th and 6th updates


def dtype_run(dtype):
    tx = gx.chain(gx.sgd(0.1, 0.9), gx.reduce_on_plateau(factor=0.5, patience=0))
    twist = 1 - 0.5j if jnp.issubdtype(jnp.dtype(dtype), jnp.complexfloating) else 1.0
    params = jax.tree.map(lambda p: (p * twist).astype(dtype), PARAMS)
    state, update = tx.init(params), jax.jit(tx.update)
    init_dtypes = jax.tree.map(lambda a: a.dtype, state)
    for value in DTYPE_LOSSES:
        updates, state = update(params, state, params, value=value)
        assert all(u.dtype == p.dtype for u, p in zip(*map(jax.tree.leaves, (updates, params))))
        params = gx.apply_updates(params, updates)
    assert jax.tree.map(lambda a: a.dtype, state) == init_dtypes
    return params, state[1]


@pytest.mark.parametrize(
    "dtype, rtol",
    [
        pytest.param("bfloat16", 0.02, marks=pytest.mark.slow),
        pytest.param("float16", 2e-3, marks=pytest.mark.slow),
        ("float32", 1e-6),
        pytest.param("float64", 1e-12, marks=pytest.mark.slow),
        pytest.param("complex64", 1e-6, marks=pytest.mark.slow),
    ],
)
def test_dtype_matrix(dtype, rtol):
    with jax.enable_x64(dtype == "float64"):
        params, plateau = dtype_run(dtype)
        wide = dtype == "float64"
        assert (
            plateau.scale.dtype == plateau.best_value.dtype == (np.float64 if wide else np.float32)
        )
        assert float(plateau.scale) == 0.125  # the decisions do not depend on the dtype
    with jax.enable_x64(True):
        reference, _ = dtype_run("complex128" if dtype == "complex64" else "float64")
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(reference)):
        np.testing.assert_allclose(np.asarray(got).astype(want.dtype), want, rtol=rtol, atol=rtol)


SHARDED = {
    "adam_reduce_on_plateau": lambda: (
        gx.chain(gx.adam(0.01), gx.reduce_on_plateau(factor=0.5, patience=0)),
        {"value": 1.0},
    ),
}


@pytest.mark.slow  # a fresh interpreter with 8 CPU devices
def test_sharded_run_has_no_collective_and_equals_one_device():
    report = sharded_report("tests.test_plateau:SHARDED")
    assert_sharded_report(report, SHARDED)
