"""Parameter averaging (issue #17): ema_params, swa, lookahead and averaged_params.

Oracles: optax's ``ema`` fed the parameter sequence and optax's ``lookahead``
(bit for bit where they compute the same expression), torch's
``swa_utils.AveragedModel`` recorded by ``tests/reference/record_torch_averaging.py``
(SWA and both torch EMA functions), a naive NumPy loop of the Lookahead paper's
two nested loops, the unwrapped optimizer (averaging must not change training),
the uninterrupted run (resume) and float64 runs (dtype rows).
"""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import DTYPES, assert_sharded_report, sharded_report

SLOW = pytest.mark.slow
STEPS = 200
PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -0.25, 2.0])}
RECORDED = np.load(pathlib.Path(__file__).parent / "reference" / "torch_averaging.npz")
TORCH_LEAVES = ("weight", "bias")


def grads_at(params, step):
    """A deterministic, step-dependent gradient: of 0.5|p|^2 plus a rotating offset."""
    return jax.tree.map(
        lambda p: p + 0.1 * jnp.cos(step + jnp.arange(p.size).reshape(p.shape)).astype(p.dtype),
        params,
    )


def bitwise(a, b):
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def trajectory(tx, fed=None, steps=STEPS, params=PARAMS):
    """Per step: the params after it, the updates, the averaged params (if any) and the
    output of ``fed`` (an optax transform fed the params after each step)."""
    averaging = bool(gx.transforms.averaging._averaging_states(tx.init(params)))

    def body(carry, k):
        p, s, fs = carry
        u, s = tx.update(grads_at(p, k), s, p)
        p = gx.apply_updates(p, u)
        out, fs = (None, fs) if fed is None else fed.update(p, fs)
        avg = gx.averaged_params(s) if averaging else None
        return (p, s, fs), (p, u, avg, out)

    init = (params, tx.init(params), None if fed is None else fed.init(params))
    return jax.jit(lambda: jax.lax.scan(body, init, jnp.arange(steps)))()


@pytest.fixture(scope="module")
def runs():
    return {
        "ema": trajectory(gx.chain(gx.adam(0.05), gx.ema_params(0.99)), optax.ema(0.99)),
        "swa": trajectory(gx.chain(gx.adam(0.05), gx.swa(start=50, every=3))),
    }


# --- parity -----------------------------------------------------------------------------------


def test_ema_params_is_optax_ema_of_the_params_bitwise(runs):
    _, (_, _, ours, theirs) = runs["ema"]
    assert bitwise(ours, theirs)


def stepped(tx, steps=STEPS):
    """The params after each step of a jitted training step (update and apply in one jit)."""

    @jax.jit
    def step(p, s, k):
        u, s = tx.update(grads_at(p, k), s, p)
        return gx.apply_updates(p, u), s

    p, s, out = PARAMS, tx.init(PARAMS), []
    for k in range(steps):
        p, s = step(p, s, k)
        out.append(p)
    return out


def test_averaging_does_not_change_training():
    # the updates pass through: the very same arrays
    for tx in (gx.ema_params(0.9), gx.swa(), gx.ema_params(0.9, debias=False)):
        u = grads_at(PARAMS, 0)
        assert tx.update(u, tx.init(PARAMS), PARAMS)[0] is u
    # and a jitted training step gives the same params, bit for bit (in one XLA program for
    # many steps, a lax.scan, the extra work can change how XLA fuses the gradient's cos and
    # so its last bit: that is XLA's rounding, not the averaging's)
    want = stepped(gx.adam(0.05), steps=30)
    for averaging in (gx.ema_params(0.99), gx.swa(start=50, every=3)):
        assert bitwise(stepped(gx.chain(gx.adam(0.05), averaging), steps=30), want)


def test_swa_is_the_uniform_average_from_start_every_3(runs):
    _, (params, _, average, _) = runs["swa"]
    taken = [t for t in range(1, STEPS + 1) if t >= 50 and (t - 50) % 3 == 0]
    for leaf in PARAMS:
        p = np.asarray(params[leaf], np.float64)
        mean = np.mean(p[[t - 1 for t in taken]], axis=0)
        np.testing.assert_allclose(average[leaf][-1], mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(average[leaf][48], PARAMS[leaf])  # nothing averaged yet
        np.testing.assert_array_equal(average[leaf][49], params[leaf][49])  # the first: a copy


def fed_torch_params(tx):
    """Runs ``tx`` on torch's recorded parameter sequence (float64 updates, so that
    ``params + updates`` is the recorded float32 params exactly); returns the averages and
    the states, one per step."""
    init = {k: jnp.asarray(RECORDED[f"initial/{k}"]) for k in TORCH_LEAVES}
    sequence = {k: jnp.asarray(RECORDED[f"params/{k}"]) for k in TORCH_LEAVES}

    def body(carry, x):
        p, s = carry
        u = jax.tree.map(lambda a, b: b.astype(jnp.float64) - a.astype(jnp.float64), p, x)
        _, s = tx.update(u, s, p)
        return (x, s), (gx.averaged_params(s), s)

    return jax.jit(lambda: jax.lax.scan(body, (init, tx.init(init)), sequence)[1])()


@pytest.mark.parametrize("start, every", [(100, 5), (0, 1), (7, 3)])
def test_swa_equals_torch_averaged_model_bitwise(start, every, x64):
    average, states = fed_torch_params(gx.swa(start, every))
    name = f"swa_{start}_{every}"
    for k in TORCH_LEAVES:
        assert average[k].dtype == jnp.float32
        np.testing.assert_array_equal(average[k], RECORDED[f"{name}/{k}"], err_msg=k)
    np.testing.assert_array_equal(states.n_averaged, RECORDED[f"{name}/n_averaged"])


def test_ema_without_debias_equals_torch_ema(x64):
    average, _ = fed_torch_params(gx.ema_params(0.99, debias=False))
    for k in TORCH_LEAVES:
        # get_ema_multi_avg_fn's lerp: the same fused multiply-add, bit for bit
        np.testing.assert_array_equal(average[k], RECORDED[f"ema_multi/{k}"], err_msg=k)
        # get_ema_avg_fn's decay * m + (1 - decay) * x rounds differently, by a few ulps
        want = RECORDED[f"ema/{k}"]
        np.testing.assert_allclose(average[k], want, rtol=0, atol=4e-6 * np.abs(want).max())
        assert not np.array_equal(average[k], want)


def test_swa_replays_the_recorded_torch_sgd_run():
    grads = {k: jnp.asarray(RECORDED[f"grads/{k}"]) for k in TORCH_LEAVES}
    init = {k: jnp.asarray(RECORDED[f"initial/{k}"]) for k in TORCH_LEAVES}
    tx = gx.chain(gx.torch_compat.sgd(lr=0.05, momentum=0.9), gx.swa(100, 5))

    def body(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p)
        p = gx.apply_updates(p, u)
        return (p, s), (p, gx.averaged_params(s), s[1].n_averaged)

    _, (params, average, n) = jax.jit(lambda: jax.lax.scan(body, (init, tx.init(init)), grads))()
    np.testing.assert_array_equal(n, RECORDED["swa_100_5/n_averaged"])
    for k in TORCH_LEAVES:  # torch's add(alpha=) rounds differently from -lr * g
        scale = np.abs(RECORDED[f"params/{k}"]).max()
        np.testing.assert_allclose(params[k], RECORDED[f"params/{k}"], rtol=0, atol=2e-6 * scale)
        np.testing.assert_allclose(
            average[k], RECORDED[f"swa_100_5/{k}"], rtol=0, atol=2e-6 * scale
        )


def test_ema_without_debias_is_optax_incremental_update_from_the_first_params():
    tx = gx.chain(gx.adam(0.05), gx.ema_params(0.9, debias=False))
    _, (params, _, ours, _) = trajectory(tx, steps=50)
    params = {k: np.asarray(v) for k, v in params.items()}  # optax's maths, in NumPy
    average = {k: v[0] for k, v in params.items()}  # m_1 = x_1
    for t in range(1, 50):
        x = {k: v[t] for k, v in params.items()}
        average = optax.incremental_update(x, average, 1 - 0.9)
        for k in PARAMS:  # (1 - b) x + b m against the lerp m + (1 - b)(x - m)
            np.testing.assert_allclose(ours[k][t], average[k], rtol=0, atol=1e-6)


def lookahead_pair(ours_fast, their_fast, steps=STEPS):
    """gradxform's and optax's lookahead (sync_period 5, alpha 0.5): the fast and slow
    trajectories of each, and optax's update taken from gradxform's fast and slow params
    and optimizer state at every step (for a stateless fast optimizer)."""
    ours = gx.lookahead(ours_fast, sync_period=5, alpha=0.5)
    theirs = optax.lookahead(their_fast, sync_period=5, slow_step_size=0.5)

    def body(carry, k):
        p, s, lp, ls = carry
        forced = optax.LookaheadParams(fast=p, slow=gx.averaged_params(s))
        state = ls._replace(steps_since_sync=s.steps_since_sync)
        forced = optax.apply_updates(forced, theirs.update(grads_at(p, k), state, forced)[0])
        u, s = ours.update(grads_at(p, k), s, p)
        p = gx.apply_updates(p, u)
        v, ls = theirs.update(grads_at(lp.fast, k), ls, lp)
        lp = optax.apply_updates(lp, v)
        return (p, s, lp, ls), (p, gx.averaged_params(s), lp.fast, lp.slow, forced)

    start = optax.LookaheadParams.init_synced(PARAMS)
    init = (PARAMS, ours.init(PARAMS), start, theirs.init(start))
    return jax.jit(lambda: jax.lax.scan(body, init, jnp.arange(steps))[1])()


def test_lookahead_equals_optax_lookahead():
    # from the same fast and slow params, the slow step is the same expression: bit for bit
    _, slow, _, _, forced = lookahead_pair(gx.sgd(0.1), optax.sgd(0.1))
    assert bitwise(slow, forced.slow)
    fast, slow, their_fast, their_slow, _ = lookahead_pair(gx.adam(0.05), optax.adam(0.05))
    for k in PARAMS:
        # the fast params after a sync: ours x + (s - x), optax's x + (u - (1 - a)(x + u - s));
        # both within rounding of s, so the trajectories agree to float32 rounding
        np.testing.assert_allclose(fast[k], their_fast[k], rtol=0, atol=1e-6)
        np.testing.assert_allclose(slow[k], their_slow[k], rtol=0, atol=1e-6)
        synced = np.asarray(fast[k][4::5]) == np.asarray(slow[k][4::5])
        their_synced = np.asarray(their_fast[k][4::5]) == np.asarray(their_slow[k][4::5])
        assert synced.mean() >= their_synced.mean(), k  # measured: 0.69 / 0.50 and 0.76 / 0.55


def test_lookahead_equals_the_papers_loop_in_numpy(x64):
    lr, k_sync, alpha, steps = 0.1, 4, 0.6, STEPS
    tx = gx.lookahead(gx.sgd(lr), sync_period=k_sync, alpha=alpha)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), PARAMS)
    _, (ours, _, slow, _) = trajectory(tx, steps=steps, params=params)
    # Zhang et al. (2019), Algorithm 1: k fast SGD steps, then s += alpha (x - s), x = s
    fast = {k: np.asarray(v) for k, v in params.items()}
    slow_ref = {k: v.copy() for k, v in fast.items()}
    for t in range(steps):
        g = {k: v + 0.1 * np.cos(t + np.arange(v.size).reshape(v.shape)) for k, v in fast.items()}
        fast = {k: fast[k] - lr * g[k] for k in fast}
        if (t + 1) % k_sync == 0:
            slow_ref = {k: slow_ref[k] + alpha * (fast[k] - slow_ref[k]) for k in fast}
            fast = {k: v.copy() for k, v in slow_ref.items()}
        for k in fast:
            np.testing.assert_allclose(ours[k][t], fast[k], rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(slow[k][t], slow_ref[k], rtol=1e-13, atol=1e-15)


# --- where the averages are found -------------------------------------------------------------


def average_after(tx, steps=3):
    """The averaged params after ``steps`` jitted training steps."""
    step = make_step(tx)
    p, s = PARAMS, tx.init(PARAMS)
    for k in range(steps):
        p, s = step(p, s, k)
    return gx.averaged_params(s)


def test_averaged_params_finds_the_state_inside_wrappers():
    want = average_after(gx.chain(gx.sgd(0.1), gx.ema_params(0.9)))
    for tx in (
        gx.apply_if_finite(gx.chain(gx.sgd(0.1), gx.ema_params(0.9))),
        gx.chain(gx.identity(), gx.chain(gx.sgd(0.1), gx.ema_params(0.9))),
    ):
        got = average_after(tx)  # another XLA program: the same up to its rounding
        for k in PARAMS:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)
    state = {"model": gx.ema_params(0.9).init(PARAMS), "step": jnp.zeros([], jnp.int32)}
    assert bitwise(gx.averaged_params(state), PARAMS)  # before any update: the params


def test_averaged_params_finds_the_state_inside_accumulate():
    tx = gx.accumulate(gx.chain(gx.sgd(0.1), gx.swa()), every=2)
    step = make_step(tx)
    params, state = PARAMS, tx.init(PARAMS)
    seen = []
    for k in range(6):
        params, state = step(params, state, k)
        if k % 2 == 1:
            seen.append(params)  # the params after each real step
    assert int(state.inner_state[1].n_averaged) == 3  # one average per real step
    for k in PARAMS:
        want = np.mean([np.asarray(p[k], np.float64) for p in seen], axis=0)
        np.testing.assert_allclose(gx.averaged_params(state)[k], want, rtol=1e-6)


def test_per_group_averages_are_put_together():
    labels = {"w": "w", "b": "b"}
    grouped = gx.partition(
        {
            "w": gx.chain(gx.adam(0.05), gx.ema_params(0.9)),
            "b": gx.chain(gx.sgd(0.1), gx.ema_params(0.9)),
        },
        labels,
    )
    outside = gx.chain(
        gx.partition({"w": gx.adam(0.05), "b": gx.sgd(0.1)}, labels), gx.ema_params(0.9)
    )
    _, (p1, _, got, _) = trajectory(grouped, steps=8)
    _, (p2, _, want, _) = trajectory(outside, steps=8)
    assert bitwise(p1, p2)
    assert bitwise(got, want)


def test_averaged_params_chooses_by_kind():
    tx = gx.lookahead(gx.chain(gx.sgd(0.1), gx.ema_params(0.5)), sync_period=2)
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match="pass kind= to choose"):
        gx.averaged_params(state)
    assert bitwise(gx.averaged_params(state, kind="lookahead"), PARAMS)
    assert bitwise(gx.averaged_params(state, kind="ema_params"), PARAMS)
    with pytest.raises(ValueError, match="a swa state"):
        gx.averaged_params(state, kind="swa")
    with pytest.raises(ValueError, match="kind must be one of"):
        gx.averaged_params(state, kind="polyak")
    with pytest.raises(ValueError, match="holding 0: none"):
        gx.averaged_params(gx.adam(0.1).init(PARAMS))
    twice = gx.chain(gx.sgd(0.1), gx.swa(), gx.swa(3)).init(PARAMS)
    with pytest.raises(ValueError, match="averaging the same leaves"):
        gx.averaged_params(twice)


# --- hyperparameters and bad input ------------------------------------------------------------


def test_hyperparameters_live_in_the_state():
    tx = gx.chain(
        gx.lookahead(gx.adam(0.1), sync_period=3, alpha=0.4), gx.ema_params(0.9), gx.swa(4, 2)
    )
    state = tx.init(PARAMS)
    found = gx.get_hyperparams(state)
    assert {k: float(found[k]) for k in ("ema_decay", "swa_start", "swa_every")} == {
        "ema_decay": np.float32(0.9),
        "swa_start": 4.0,
        "swa_every": 2.0,
    }
    assert int(found["lookahead_sync_period"]) == 3
    assert float(found["lookahead_alpha"]) == np.float32(0.4)
    assert found["swa_start"].dtype == jnp.int32


def test_a_decay_set_in_the_state_equals_one_built_with_it_without_recompiling():
    tx = gx.chain(gx.sgd(0.1), gx.ema_params(0.9))
    step = jax.jit(lambda p, s, k: tx.update(grads_at(p, k), s, p))
    rebuilt = gx.chain(gx.sgd(0.1), gx.ema_params(0.5))
    p, s, s2 = PARAMS, gx.set_hyperparams(tx.init(PARAMS), ema_decay=0.5), rebuilt.init(PARAMS)
    for k in range(5):
        u, s = step(p, s, k)
        _, s2 = rebuilt.update(grads_at(p, k), s2, p)
        p = gx.apply_updates(p, u)
        assert bitwise(gx.averaged_params(s), gx.averaged_params(s2))
    assert step._cache_size() == 1
    with pytest.raises(ValueError, match="ema_decay must be"):
        gx.set_hyperparams(s, ema_decay=1.0)


BAD = [
    (lambda: gx.ema_params(1.0), ValueError, "decay must be a real number in [0, 1)"),
    (lambda: gx.ema_params(-0.1), ValueError, "decay must be"),
    (lambda: gx.ema_params("0.9"), TypeError, "ema_decay must be"),
    (lambda: gx.ema_params(0.9, debias=1), TypeError, "debias must be True or False"),
    (lambda: gx.ema_params(0.9, dtype=jnp.int32), ValueError, "dtype must be None or a floating"),
    (lambda: gx.swa(-1), ValueError, "start must be an integer >= 0"),
    (lambda: gx.swa(1.5), TypeError, "start must be an integer"),
    (lambda: gx.swa(True), TypeError, "start must be an integer"),
    (lambda: gx.swa(0, every=0), ValueError, "every must be an integer >= 1"),
    (lambda: gx.lookahead(gx.sgd(0.1), sync_period=0), ValueError, "sync_period must be"),
    (lambda: gx.lookahead(gx.sgd(0.1), sync_period=2.0), TypeError, "sync_period must be"),
    (
        lambda: gx.lookahead(gx.sgd(0.1), alpha=0.0),
        ValueError,
        "alpha must be a real number in (0, 1]",
    ),
    (lambda: gx.lookahead(gx.sgd(0.1), alpha=1.5), ValueError, "alpha must be"),
    (lambda: gx.lookahead("sgd"), TypeError, "GradientTransformation"),
]


@pytest.mark.parametrize("make, error, message", BAD)
def test_bad_arguments_raise_when_built(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


@pytest.mark.parametrize(
    "tx", [gx.ema_params(), gx.swa(), gx.lookahead(gx.sgd(0.1))], ids=["ema", "swa", "lookahead"]
)
def test_missing_params_is_an_error_when_traced(tx):
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match=r"params must be given \(.*\); got None"):
        jax.eval_shape(lambda u, s: tx.update(u, s), PARAMS, state)


# --- resume and dtypes ------------------------------------------------------------------------


def every_kind(fast, dtype=None, decay=0.9, alpha=0.5):
    """One transform holding every averaging state: lookahead around a chain ending in
    both EMA flavours and SWA (read with :func:`averages`)."""
    averaging = gx.chain(
        fast,
        gx.ema_params(decay, dtype=dtype),
        gx.ema_params(decay, debias=False, dtype=dtype),
        gx.swa(start=3, every=2, dtype=dtype),
    )
    return gx.lookahead(averaging, sync_period=3, alpha=alpha, dtype=dtype)


def averages(state):
    """name -> the averaged params of each state of :func:`every_kind`."""
    inner = state.inner_state
    return {
        "lookahead": gx.averaged_params(state, kind="lookahead"),
        "ema_params": gx.averaged_params(inner[1]),
        "ema_params_torch": gx.averaged_params(inner[2]),
        "swa": gx.averaged_params(inner[3]),
    }


def make_step(tx):
    @jax.jit
    def step(params, state, k):
        updates, state = tx.update(grads_at(params, k), state, params)
        return gx.apply_updates(params, updates), state

    return step


def run(step, params, state, start, stop):
    for k in range(start, stop):
        params, state = step(params, state, k)
    return params, state


def test_resume_from_npz_and_orbax_is_bitwise(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    step = make_step(every_kind(gx.adam(0.05)))
    params, state = run(step, PARAMS, every_kind(gx.adam(0.05)).init(PARAMS), 0, 7)  # mid-period
    gx.checkpoint.save(tmp_path / "params.npz", params)
    gx.checkpoint.save(tmp_path / "state.npz", state)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
        checkpointer.wait_until_finished()
        template = {"params": PARAMS, "opt_state": every_kind(gx.adam(0.05)).init(PARAMS)}
        restored = checkpointer.restore(tmp_path / "ckpt", template)
    want = run(step, params, state, 7, 40)
    template = every_kind(gx.adam(0.05)).init(PARAMS)
    from_npz = (
        gx.checkpoint.restore(tmp_path / "params.npz", like=PARAMS),
        gx.checkpoint.restore(tmp_path / "state.npz", like=template),
    )
    assert bitwise(run(step, *from_npz, 7, 40), want)
    assert bitwise(run(step, restored["params"], restored["opt_state"], 7, 40), want)
    assert int(want[1].inner_state[3].n_averaged) == 19  # steps 3, 5, ..., 39


# dtype rows: decay 0.75 and alpha 0.5 are exact in every dtype (tighter than the shared table)
TOLERANCE = {
    "bfloat16": 3e-2,
    "float16": 4e-3,
    "float32": 1e-5,
    "float64": 1e-12,
    "complex64": 1e-5,
}
_REFERENCES: dict = {}


def dtype_run(dtype, steps=12):
    """Params and averages after ``steps`` SGD steps in ``dtype``, and the state's dtypes
    at init and at the end."""
    tx = every_kind(gx.sgd(0.1), decay=0.75)
    params = jax.tree.map(lambda p: p.astype(dtype), PARAMS)
    state = tx.init(params)
    init_dtypes = jax.tree.map(lambda a: a.dtype, state)
    step = make_step(tx)
    for k in range(steps):
        params, state = step(params, state, k)
    return params, averages(state), init_dtypes, jax.tree.map(lambda a: a.dtype, state)


def reference_run(dtype):
    wide = "complex128" if dtype == "complex64" else "float64"
    if wide not in _REFERENCES:
        with jax.enable_x64(True):
            _REFERENCES[wide] = dtype_run(wide)[1]
    return _REFERENCES[wide]


@pytest.mark.parametrize(
    "dtype", [pytest.param(d, marks=() if d in ("bfloat16", "float32") else SLOW) for d in DTYPES]
)
def test_dtype_rows(dtype):
    with jax.enable_x64(dtype == "float64"):
        params, got, init_dtypes, end_dtypes = dtype_run(dtype)
    assert end_dtypes == init_dtypes  # the state never changes dtype
    assert all(p.dtype == jnp.dtype(dtype) for p in jax.tree.leaves(params))
    assert all(a.dtype == jnp.dtype(dtype) for a in jax.tree.leaves(got))  # the params'
    reference = reference_run(dtype)
    wide = np.complex128 if dtype == "complex64" else np.float64
    for kind, average in got.items():
        for k in PARAMS:
            tol = TOLERANCE[dtype]
            np.testing.assert_allclose(
                np.asarray(average[k]).astype(wide),
                reference[kind][k],
                rtol=tol,
                atol=tol,
                err_msg=f"{kind} {dtype} {k}",
            )


def test_float32_averages_of_bfloat16_params():
    """bfloat16 rounds 0.999 to 1: a bfloat16 EMA of decay 0.999 is wrong, a float32 one is
    the float64 average of the same bfloat16 params (as stored, not as XLA may keep the
    sum in float32) to float32 rounding."""
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), PARAMS)
    errors = {}
    for dtype in (None, jnp.float32):
        tx = gx.chain(gx.sgd(0.1), gx.ema_params(0.999, dtype=dtype))
        step, p, s = make_step(tx), params, tx.init(params)
        seen = []
        for k in range(30):
            p, s = step(p, s, k)
            seen.append({k: np.asarray(v, np.float64) for k, v in p.items()})
        average = gx.averaged_params(s)
        assert all(a.dtype == (dtype or jnp.bfloat16) for a in jax.tree.leaves(average))
        assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(p))
        weights = np.array([0.001 * 0.999 ** (29 - t) for t in range(30)]) / (1 - 0.999**30)
        errors[dtype] = max(
            np.max(
                np.abs(
                    np.asarray(average[k], np.float64)
                    - sum(w * x[k] for w, x in zip(weights, seen))
                )
            )
            for k in PARAMS
        )
    # float32: within (1 - b) / (1 - b^t) rounding (b = 0.999 is 1.3e-5 off in float32)
    assert errors[jnp.float32] < 3e-5 < 1e-2 < errors[None], errors  # measured 7.2e-6, 1.7e-2


# --- sharding ---------------------------------------------------------------------------------

# (tx, extra_args) pairs: sharded_run.py unpacks any tuple, and a transform is a NamedTuple
SHARDED = {
    "ema_params": lambda: (gx.chain(gx.adam(0.01), gx.ema_params(0.9)), {}),
    "swa": lambda: (gx.chain(gx.adam(0.01), gx.swa(start=2, every=2)), {}),
    "lookahead": lambda: (gx.lookahead(gx.adam(0.01), sync_period=2, alpha=0.5), {}),
}


@SLOW
def test_sharded_averages_keep_the_params_shardings_without_collectives():
    report = sharded_report("tests.test_averaging:SHARDED")
    assert_sharded_report(report, SHARDED)
    for name, row in report.items():
        # Adam's two moments and the average (or the slow weights) of each of the 4 leaves
        assert row["param_shaped_state_leaves"] == 3 * 4, (name, row)
        assert row["bitwise"], (name, row["max_abs_diff"])  # measured: all four bitwise
