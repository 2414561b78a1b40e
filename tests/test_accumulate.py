"""gx.accumulate (issue #17): k microbatch calls make one step on their mean gradient.

Oracles: the same transform fed the explicit mean ``(g_1 + ... + g_k) / k`` (a
left fold, divided once) in a scan of its own; optax.MultiSteps (with a sum
and a scale by 1/k, the same expression, and with its running mean); the
sizes of the inner state and of the params (memory); exact sums in NumPy
(accumulator dtype); the uninterrupted run (resume); a float64 run (dtypes);
a single device (sharding). The trajectory comparisons are bitwise in a fresh
interpreter whose XLA emits no FMA (test_comparisons_are_bitwise_without_fma)
and close here, where XLA fuses multiply-adds differently in the two programs.
"""

import functools
import json
import operator
import platform

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    DTYPES,
    TOLERANCE,
    assert_sharded_report,
    run_on_eight_cpu_devices,
    sharded_report,
)

SLOW = pytest.mark.slow
SHAPES = {"w": (2, 3), "b": (3,)}
STEPS = 200


def params_and_noise(calls, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    noise = {k: rng.standard_normal((calls, *s)).astype(dtype) for k, s in SHAPES.items()}
    return params, noise


def row(noise, j):
    return jax.tree.map(lambda n: n[j], noise)


def microbatch_grad(params, noise_j):
    """A gradient that depends on the params: of 0.5 |p - n_j|^2."""
    return jax.tree.map(jnp.subtract, params, noise_j)


def leaves_equal(a, b):
    return jnp.all(jnp.stack([jnp.all(x == y) for x, y in zip(jax.tree.leaves(a), b)] + [True]))


def all_zero(tree):
    return jnp.all(jnp.stack([jnp.all(x == 0) for x in jax.tree.leaves(tree)] + [True]))


def assert_bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


def run_microsteps(tx, params, noise, inner_state_of=lambda s: s.inner_state, **extra):
    """Every microbatch call of ``tx`` in one jitted scan.

    Returns the params, the state and, per call, whether the updates were all
    zero and whether the inner state was left exactly as it was.
    """

    def call(carry, noise_j):
        p, state = carry
        updates, new_state = tx.update(microbatch_grad(p, noise_j), state, p, **extra)
        before = jax.tree.leaves(inner_state_of(state))
        kept = leaves_equal(inner_state_of(new_state), before)
        return (gx.apply_updates(p, updates), new_state), (all_zero(updates), kept)

    @jax.jit
    def run(params, noise):
        return jax.lax.scan(call, (params, tx.init(params)), noise)

    (params, state), flags = run(params, noise)
    return params, state, flags


def run_explicit_mean(tx, params, noise, every, skip=None):
    """``tx`` fed ``(g_1 + ... + g_k) / k`` once per ``k`` microbatches (a left fold).

    ``skip``: per step, True to leave params and state as they are (whole step skipped).
    """
    steps = jax.tree.leaves(noise)[0].shape[0] // every
    chunks = jax.tree.map(lambda n: n.reshape(steps, every, *n.shape[1:]), noise)
    skip = jnp.zeros(steps, bool) if skip is None else jnp.asarray(skip)

    def step(carry, inputs):
        (p, state), (chunk, skipped) = carry, inputs

        def apply(p, state):
            grads = [microbatch_grad(p, row(chunk, j)) for j in range(every)]
            mean = jax.tree.map(lambda s: s / every, functools.reduce(gx.tree.add, grads))
            # the mean is materialised, then fed to tx (XLA would otherwise fold tx's
            # constant factors into the 1/k it multiplies by for "/ k")
            updates, state = tx.update(jax.lax.optimization_barrier(mean), state, p)
            return updates, state

        def keep(p, state):
            return jax.tree.map(jnp.zeros_like, jax.eval_shape(apply, p, state)[0]), state

        # a branch, so that XLA does not contract tx's last multiply with apply_updates'
        # add into one FMA (it does within a fusion: measured 1e-16 apart)
        updates, state = jax.lax.cond(skipped, keep, apply, p, state)
        return (gx.apply_updates(p, updates), state), None

    @jax.jit
    def run(params, chunks, skip):
        return jax.lax.scan(step, (params, tx.init(params)), (chunks, skip))[0]

    return run(params, chunks, skip)


INNER = {
    "adam": lambda: gx.adam(0.01),
    "sgd_momentum": lambda: gx.sgd(0.05, 0.9, dampening=0.1, weight_decay=1e-3),
}


# --- the mean, the zeros between steps, every=1 ------------------------------------------------
#
# XLA on CPU contracts a * b + c into one FMA inside a fusion, and two programs computing the
# same expressions fuse differently (measured: 1e-16 apart in float64, 3e-8 in float32 after 200
# steps). The comparisons below are therefore bitwise in a fresh interpreter with FMA off
# (--xla_cpu_max_isa=AVX, test_comparisons_are_bitwise_without_fma), and close here.


def explicit_mean(name, every=3):
    """float64: accumulate(tx, 3) against tx fed the explicit mean (3: not a power of two)."""
    with jax.enable_x64(True):
        params, noise = params_and_noise(STEPS * every)
        got, state, _ = run_microsteps(gx.accumulate(INNER[name](), every), params, noise)
        want, want_state = run_explicit_mean(INNER[name](), params, noise, every)
    return (got, state.inner_state), (want, want_state)


def optax_multisteps_sum(every=4):
    """float32: optax's sum (use_grad_mean=False) scaled by 1/4 is exactly our sum / 4."""
    params, noise = params_and_noise(STEPS * every, np.float32)
    ours, _, _ = run_microsteps(gx.accumulate(gx.adam(0.01), every), params, noise)
    summed = optax.MultiSteps(
        optax.chain(optax.scale(1 / every), gx.adam(0.01)), every, use_grad_mean=False
    )
    theirs, _, _ = run_microsteps(summed, params, noise, inner_state_of=lambda s: s.inner_opt_state)
    return ours, theirs


def test_k_microbatches_equal_one_step_on_the_explicit_mean_float64():
    """The mean tx sees is bitwise the explicit mean; between steps nothing moves."""
    every = 3

    def recorder():  # keeps the updates it is given: the mean
        return gx.GradientTransformationExtraArgs(lambda p: p, lambda u, s, p=None: (u, u))

    with jax.enable_x64(True):
        params, noise = params_and_noise(STEPS * every)
        tx = gx.accumulate(gx.chain(recorder(), gx.adam(0.01)), every)

        def call(carry, noise_j):
            p, state = carry
            updates, new = tx.update(microbatch_grad(p, noise_j), state, p)
            kept = leaves_equal(new.inner_state, jax.tree.leaves(state.inner_state))
            return (gx.apply_updates(p, updates), new), (
                p,
                new.inner_state[0],
                all_zero(updates),
                kept,
            )

        run = jax.jit(lambda p: jax.lax.scan(call, (p, tx.init(p)), noise))
        (_, state), (before, fed, zero, kept) = run(params)
        fed, before, zero, kept = jax.tree.map(np.asarray, (fed, before, zero, kept))
        final = np.arange(STEPS * every) % every == every - 1
        # between steps: zero updates, the params stay put and the inner state is untouched
        assert np.all(zero[~final]) and np.all(kept[~final]) and not np.any(kept[final])
        for key, n in noise.items():
            p = before[key].reshape(STEPS, every, *SHAPES[key])
            assert np.all(p == p[:, :1])
            grads = p - n.reshape(p.shape)  # g_j = p - n_j at the step's params
            total = functools.reduce(operator.add, [grads[:, j] for j in range(every)])
            # JAX's total / 3 (XLA multiplies by the rounded 1/3, as NumPy's * (1 / 3) does)
            want = np.asarray(jax.jit(lambda t: t / every)(total))
            np.testing.assert_array_equal(want, total * (1 / every))
            np.testing.assert_array_equal(fed[key][final], want)
            ulp = np.spacing(np.abs(total / every))
            assert np.all(np.abs(want - total / every) <= ulp)  # within one ulp of the quotient
        assert int(state.gradient_step) == STEPS and int(state.mini_step) == 0


@pytest.mark.parametrize("name", sorted(INNER))
def test_the_trajectory_follows_tx_on_the_explicit_mean_float64(name):
    for got, want in zip(*map(jax.tree.leaves, explicit_mean(name))):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


def test_float32_follows_optax_multisteps():
    ours, theirs = optax_multisteps_sum()
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # optax's default keeps a running mean a + (g - a) / (n + 1): close, not the same rounding
    params, noise = params_and_noise(STEPS * 4, np.float32)
    running = optax.MultiSteps(gx.adam(0.01), 4)
    mean, _, _ = run_microsteps(running, params, noise, inner_state_of=lambda s: s.inner_opt_state)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(mean)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_every_1_is_the_inner_transform():
    params, noise = params_and_noise(50, np.float32)
    got, state, _ = run_microsteps(gx.accumulate(gx.adam(0.01), every=1), params, noise)
    want, want_state, _ = run_microsteps(gx.adam(0.01), params, noise, inner_state_of=lambda s: s)
    assert_bitwise(got, want)
    assert_bitwise(state.inner_state, want_state)
    # the state's structure does not depend on every: a state at a step boundary carries over
    other = gx.accumulate(gx.adam(0.01), every=4).init(params)
    assert jax.tree.structure(other) == jax.tree.structure(state)


def test_extra_arguments_reach_the_inner_transform_on_the_final_call():
    def last_value():  # records the value= it is given
        return gx.GradientTransformationExtraArgs(
            lambda params: jnp.float32(-1), lambda u, s, p=None, value=None: (u, value)
        )

    tx = gx.accumulate(last_value(), every=3)
    update = jax.jit(tx.update)
    state, seen = tx.init(jnp.zeros(2)), []
    for call in range(7):
        _, state = update(jnp.ones(2), state, value=jnp.float32(call))
        seen.append(float(state.inner_state))
    assert seen == [-1, -1, 2, 2, 2, 5, 5]


def test_a_jitted_accumulation_runs_the_inner_update_once_per_step():
    """The inner update sits in a lax.cond: an accumulating call does not run it."""
    runs = []

    def counting():
        def update(u, s, p=None):
            jax.debug.callback(lambda: runs.append(1))
            return u, s

        return gx.GradientTransformation(lambda params: gx.EmptyState(), update)

    tx = gx.accumulate(counting(), every=4)
    update = jax.jit(tx.update)
    state = tx.init(jnp.zeros(2))
    for _ in range(8):
        _, state = update(jnp.ones(2), state)
    jax.effects_barrier()
    assert len(runs) == 2


# --- memory and dtypes -------------------------------------------------------------------------


def nbytes(tree):
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "dtype, accumulator_dtype", [("float32", None), ("bfloat16", None), ("bfloat16", "float32")]
)
def test_state_is_the_inner_state_plus_one_accumulator_buffer(dtype, accumulator_dtype):
    params = {k: jnp.zeros(s, dtype) for k, s in {"w": (64, 24), "b": (24,)}.items()}
    inner = gx.adam(0.01).init(params)
    state = gx.accumulate(gx.adam(0.01), 4, accumulator_dtype=accumulator_dtype).init(params)
    acc_bytes = jnp.dtype(accumulator_dtype or dtype).itemsize * (64 * 24 + 24)
    assert nbytes(state) == nbytes(inner) + acc_bytes + 2 * 4  # + mini_step and gradient_step
    assert nbytes(state.acc_grads) == acc_bytes
    assert_bitwise(state.inner_state, inner)


def test_a_float32_accumulator_keeps_bfloat16_microbatches_exact():
    """Eight bfloat16 gradients, 1 and seven of 2**-8: bfloat16 sums lose each small one."""
    grads = [1.0] + [2.0**-8] * 7
    exact = np.float64(sum(grads)) / 8  # 0.1284..., a tie that bfloat16 rounds to 0.12890625
    sgd = gx.sgd(1.0)
    for accumulator_dtype, want in [("float32", exact), (None, 1.0 / 8)]:
        tx = gx.accumulate(sgd, every=8, accumulator_dtype=accumulator_dtype)
        state = tx.init(jnp.zeros(1, jnp.bfloat16))
        for g in grads:
            updates, state = tx.update(jnp.full(1, g, jnp.bfloat16), state)
        assert updates.dtype == jnp.bfloat16
        assert float(-updates[0]) == float(jnp.bfloat16(want)), accumulator_dtype
    assert float(jnp.bfloat16(exact)) != 1.0 / 8  # the two rows tell the dtypes apart


@functools.cache
def dtype_run(dtype, accumulator_dtype=None, calls=6):
    params, noise = params_and_noise(calls, np.float64)
    cast = lambda t: jax.tree.map(lambda a: jnp.asarray(a * (1 - 0.5j), dtype), t)  # noqa: E731
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.complexfloating):
        cast = lambda t: jax.tree.map(lambda a: jnp.asarray(a, dtype), t)  # noqa: E731
    params, noise = cast(params), cast(noise)
    tx = gx.accumulate(gx.adam(0.1), 2, accumulator_dtype=accumulator_dtype)
    state = tx.init(params)
    dtypes = jax.tree.map(lambda a: a.dtype, state)
    update = jax.jit(tx.update)
    for j in range(calls):
        updates, state = update(microbatch_grad(params, row(noise, j)), state)
        params = gx.apply_updates(params, updates)
    return params, state, dtypes


@pytest.mark.parametrize(
    "dtype, accumulator_dtype",
    [
        pytest.param(d, a, marks=() if d == "bfloat16" else SLOW)  # the fast loop: bfloat16
        for d, a in [(d, None) for d in DTYPES] + [("bfloat16", "float32"), ("float16", "float32")]
    ],
)
def test_dtype_matrix(dtype, accumulator_dtype):
    with jax.enable_x64(dtype == "float64"):
        params, state, init_dtypes = dtype_run(dtype, accumulator_dtype)
        assert jax.tree.map(lambda a: a.dtype, state) == init_dtypes  # never changes dtype
        assert all(p.dtype == jnp.dtype(dtype) for p in jax.tree.leaves(params))
        want = jnp.dtype(accumulator_dtype or dtype)
        if dtype == "complex64":
            want = jnp.dtype(jnp.complex64)
        assert all(a.dtype == want for a in jax.tree.leaves(state.acc_grads))
    with jax.enable_x64(True):
        reference, _, _ = dtype_run("complex128" if dtype == "complex64" else "float64")
    for got, ref in zip(jax.tree.leaves(params), jax.tree.leaves(reference)):
        got = np.asarray(got).astype(np.complex128)
        tol = TOLERANCE[dtype]
        np.testing.assert_allclose(got, np.asarray(ref), rtol=tol, atol=tol, err_msg=dtype)


# --- non-finite microbatches -------------------------------------------------------------------

BAD = {5: np.nan, 6: np.inf, 17: np.nan, 50: -np.inf, 51: np.nan}  # call index -> poison


def poisoned(noise):
    return {
        k: functools.reduce(lambda n, bad: n.at[bad[0], 0].set(bad[1]), BAD.items(), n)
        if k == "b"
        else n
        for k, n in noise.items()
    }


def finite_outside(against, every=4, calls=4 * 60):
    """float32, the recommended order: a bad microbatch is dropped, the next finite one counts."""
    params, noise = params_and_noise(calls, np.float32)
    noise = jax.tree.map(jnp.asarray, noise)
    tx = gx.apply_if_finite(gx.accumulate(gx.adam(0.01), every), max_consecutive_skips=3)
    ours, state, _ = run_microsteps(
        tx, params, poisoned(noise), inner_state_of=lambda s: s.inner_state.inner_state
    )
    assert int(state.total_skipped) == len(BAD)
    if against == "optax":  # MultiSteps skipping non-finite microbatches, summing, then 1/4
        reference = optax.MultiSteps(
            optax.chain(optax.scale(1 / every), gx.adam(0.01)),
            every,
            use_grad_mean=False,
            should_skip_update_fn=optax.skip_not_finite,
        )
        theirs, _, _ = run_microsteps(
            reference, params, poisoned(noise), inner_state_of=lambda s: s.inner_opt_state
        )
        return ours, theirs
    # the explicit mean of the finite microbatches, in order, k at a time
    finite = [j for j in range(calls) if j not in BAD]
    kept = jax.tree.map(lambda n: n[np.array(finite[: len(finite) // every * every])], noise)
    want, _ = run_explicit_mean(gx.adam(0.01), params, kept, every)
    return ours, want


def finite_inside(every=4, calls=4 * 30):
    """float32: a bad microbatch makes the inner guard skip the whole step."""
    params, noise = params_and_noise(calls, np.float32)
    noise = jax.tree.map(jnp.asarray, noise)
    tx = gx.accumulate(gx.apply_if_finite(gx.adam(0.01), max_consecutive_skips=3), every)
    ours, state, _ = run_microsteps(tx, params, poisoned(noise))
    skipped = np.zeros(calls // every, bool)
    skipped[[j // every for j in BAD]] = True
    assert int(state.inner_state.total_skipped) == skipped.sum() == 3
    assert not bool(state.inner_state.gave_up)
    want, want_state = run_explicit_mean(gx.adam(0.01), params, noise, every, skip=skipped)
    return (ours, state.inner_state.inner_state), (want, want_state)


def assert_close(pair, tol):
    got, want = pair
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_apply_if_finite_outside_drops_bad_microbatches_as_optax_skip_not_finite():
    assert_close(finite_outside("optax"), 1e-6)


@SLOW
def test_apply_if_finite_outside_means_the_finite_microbatches():
    assert_close(finite_outside("explicit"), 1e-6)


def test_apply_if_finite_inside_skips_the_whole_step():
    assert_close(finite_inside(), 1e-6)


def test_has_updated_says_which_calls_took_a_step():
    tx = gx.apply_if_finite(gx.accumulate(gx.sgd(0.1), every=2))
    state, flags = tx.init(jnp.zeros(1)), []
    for g in [1.0, 1.0, 1.0, 1.0, jnp.nan, 1.0]:
        _, state = tx.update(jnp.full(1, g), state)
        flags.append(bool(gx.has_updated(state)))
    # the NaN call is dropped: it leaves the accumulation as it was after a step
    assert flags == [False, True, False, True, False, False]
    assert bool(jax.jit(gx.has_updated)(state)) is False
    with pytest.raises(ValueError, match="has_updated's state must be a state holding"):
        gx.has_updated(gx.adam(0.1).init(jnp.zeros(1)))


# --- hyperparameters, checkpoints, bad input ---------------------------------------------------


def set_mid_accumulation():
    """float32: learning_rate set after 3 microbatches (every=2) against adam set the same way."""
    params, noise = jax.tree.map(jnp.asarray, params_and_noise(8, np.float32))
    tx = gx.accumulate(gx.adam(0.01), every=2)
    state = tx.init(params)
    assert gx.get_hyperparams(state) == gx.get_hyperparams(gx.adam(0.01).init(params))
    step = jax.jit(tx.update)
    p = params
    for j in range(8):
        if j == 3:  # mid-accumulation
            compiled = step._cache_size()
            state = gx.set_hyperparams(state, learning_rate=0.001)
        updates, state = step(microbatch_grad(p, row(noise, j)), state, p)
        p = gx.apply_updates(p, updates)
    assert step._cache_size() == compiled  # setting it did not recompile
    assert float(gx.get_hyperparams(state)["learning_rate"]) == np.float32(0.001)
    # the reference: one step at 0.01, then three at 0.001: a rate set mid-accumulation is
    # the rate of the step that accumulation completes
    inner, q = gx.adam(0.01), params
    ref_state, ref_step = inner.init(params), jax.jit(inner.update)
    for s in range(4):
        if s == 1:
            ref_state = gx.set_hyperparams(ref_state, learning_rate=0.001)
        gs = [microbatch_grad(q, row(noise, j)) for j in (2 * s, 2 * s + 1)]
        updates, ref_state = ref_step(jax.tree.map(lambda a: a / 2, gx.tree.add(*gs)), ref_state, q)
        q = gx.apply_updates(q, updates)
    return (p, state.inner_state), (q, ref_state)


def test_hyperparams_of_the_inner_transform_are_reached_through_the_state():
    assert_close(set_mid_accumulation(), 1e-6)


def make_step(tx):
    @jax.jit
    def step(params, state, noise_j):
        updates, state = tx.update(microbatch_grad(params, noise_j), state, params)
        return gx.apply_updates(params, updates), state

    return step


def run(step, params, state, noise, start, stop):
    for j in range(start, stop):
        params, state = step(params, state, row(noise, j))
    return params, state


@pytest.mark.parametrize("how", ["npz", "orbax"])
def test_resume_mid_accumulation_is_bitwise(how, tmp_path):
    make = lambda: gx.accumulate(gx.adam(gx.schedules.cosine_decay(0.01, 50)), 4)  # noqa: E731
    params0, noise = params_and_noise(107, np.float32)
    tx = make()
    step = make_step(tx)
    params, state = run(step, params0, tx.init(params0), noise, 0, 7)
    assert int(state.mini_step) == 3  # three microbatches summed, not yet applied
    want = run(step, params, state, noise, 7, 107)
    template = {"params": params0, "state": make().init(params0)}
    if how == "npz":
        gx.checkpoint.save(tmp_path / "ckpt.npz", {"params": params, "state": state})
        restored = gx.checkpoint.restore(tmp_path / "ckpt.npz", like=template)
    else:
        ocp = pytest.importorskip("orbax.checkpoint")
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(tmp_path / "ckpt", {"params": params, "state": state})
            checkpointer.wait_until_finished()
            restored = checkpointer.restore(tmp_path / "ckpt", template)
    got = run(step, restored["params"], restored["state"], noise, 7, 107)
    assert_bitwise(got, want)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"every": 0}, ValueError, "every must be an integer >= 1; got 0"),
        ({"every": 2.0}, TypeError, "every must be an integer >= 1; got 2.0"),
        ({"every": True}, TypeError, "every must be an integer >= 1; got True"),
        ({"every": jnp.int32(4)}, TypeError, "every must be an integer >= 1; got Array"),
        (
            {"every": 2, "accumulator_dtype": "int32"},
            ValueError,
            "accumulator_dtype must be None or a real floating dtype; got 'int32'",
        ),
        (
            {"every": 2, "accumulator_dtype": "complex64"},
            ValueError,
            "accumulator_dtype must be None or a real floating dtype",
        ),
        (
            {"every": 2, "accumulator_dtype": "fp33"},
            TypeError,
            "accumulator_dtype must be None or a real floating dtype; got 'fp33'",
        ),
    ],
)
def test_bad_input_is_an_error_when_built(kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        gx.accumulate(gx.sgd(0.1), **kwargs)


# --- sharding ----------------------------------------------------------------------------------

SHARDED = {
    "accumulate_adam": lambda: gx.accumulate(gx.adam(0.1), every=2),
    "accumulate_sgd_momentum": lambda: gx.accumulate(gx.sgd(0.1, 0.9), every=3),
    "accumulate_adamw_float32_accumulator": lambda: gx.accumulate(
        gx.adamw(0.1), every=2, accumulator_dtype=jnp.float32
    ),
}


@SLOW
def test_sharded_accumulation_keeps_shardings_without_collectives():
    report = sharded_report("tests.test_accumulate:SHARDED")
    # XLA contracts multiply-adds into FMAs differently in the sharded program: measured
    # 3e-8 (Adam) and 2.4e-7 (AdamW) apart, and bitwise with --xla_cpu_max_isa=AVX
    assert_sharded_report(report, SHARDED, max_abs_diff=1e-6)
    assert report["accumulate_sgd_momentum"]["bitwise"]


# --- bitwise, with FMA off ---------------------------------------------------------------------

COMPARISONS = {
    "explicit_mean_adam_float64": lambda: explicit_mean("adam"),
    "explicit_mean_sgd_momentum_float64": lambda: explicit_mean("sgd_momentum"),
    "optax_multisteps_sum_float32": optax_multisteps_sum,
    "finite_outside_optax_float32": lambda: finite_outside("optax"),
    "finite_outside_explicit_float32": lambda: finite_outside("explicit"),
    "finite_inside_explicit_float32": finite_inside,
    "set_hyperparams_mid_accumulation_float32": set_mid_accumulation,
}


def bitwise_report() -> dict:
    """Each comparison: whether the two sides are bitwise equal, and their largest difference."""
    report = {}
    for name, compare in COMPARISONS.items():
        got, want = compare()
        pairs = list(zip(jax.tree.leaves(got), jax.tree.leaves(want)))
        same = jax.tree.structure(got) == jax.tree.structure(want) and all(
            a.dtype == b.dtype and np.array_equal(a, b) for a, b in pairs
        )
        diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs)
        report[name] = {"bitwise": bool(same), "max_abs_diff": diff}
    return report


def fma_is_off() -> bool:
    """Whether this process's XLA rounds a * b + c twice (no fused multiply-add)."""
    a, b, c = np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32)
    return bool(np.array_equal(jax.jit(lambda a, b, c: a * b + c)(a, b, c), a * b + c))


@SLOW
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="an x86 ISA flag")
def test_comparisons_are_bitwise_without_fma():
    """In a fresh interpreter whose XLA emits no FMA instructions, every comparison is exact."""
    # XLA_FLAGS is read when jax starts its CPU backend: set before jax is imported
    no_fma = (
        "import os, runpy; os.environ['XLA_FLAGS'] += ' --xla_cpu_max_isa=AVX'; "
        "runpy.run_module('tests.test_accumulate', run_name='__main__')"
    )
    report = run_on_eight_cpu_devices("-c", no_fma)
    assert report.pop("fma_off")
    assert set(report) == set(COMPARISONS)
    for name, row in report.items():
        assert row["bitwise"], (name, row)


if __name__ == "__main__":
    print(json.dumps({"fma_off": fma_is_off(), **bitwise_report()}))
