"""Reliability (issue #8): resume bit-for-bit, non-finite steps, dtypes, hostile input.

Oracles: the uninterrupted run (resume), the run that never saw the bad step
(apply_if_finite), a float64 run of the same optimizer (dtype matrix), and the
documented messages (hostile input).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import DTYPES, ELEMENTWISE, SECOND_ORDER, TOLERANCE

SLOW = pytest.mark.slow
PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -0.25, 2.0])}


def grads_at(params, step):
    """A deterministic, step-dependent gradient: of 0.5|p|^2 plus a rotating offset."""
    return jax.tree.map(
        lambda p: p + 0.1 * jnp.cos(step + jnp.arange(p.size).reshape(p.shape)), params
    )


def quadratic(params):
    return 0.5 * sum(jnp.sum(p**2) for p in jax.tree.leaves(params))


OPTIMIZERS = {**ELEMENTWISE, **SECOND_ORDER}


def make_step(tx):
    @jax.jit
    def step(params, state, k):
        value, grads = jax.value_and_grad(quadratic)(params)
        grads = jax.tree.map(jnp.add, grads, grads_at(params, k))
        grads = jax.tree.map(jnp.subtract, grads, params)  # = grads_at, for every optimizer
        updates, state = tx.update(
            grads, state, params, value=value, grad=grads, value_fn=quadratic
        )
        return gx.apply_updates(params, updates), state

    return step


def run(step, params, state, start, stop):
    for k in range(start, stop):
        params, state = step(params, state, k)
    return params, state


def assert_bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


# --- checkpoint and resume --------------------------------------------------------------------


FAST_RESUME = {"adam", "rmsprop", "adam_scheduled", "apply_if_finite_adam"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n in FAST_RESUME else SLOW) for n in sorted(OPTIMIZERS)]
)
def test_resume_from_npz_is_bitwise_for_100_steps(name, tmp_path):
    tx = OPTIMIZERS[name]()
    step = make_step(tx)
    k = 7
    params, state = run(step, PARAMS, tx.init(PARAMS), 0, k)
    gx.checkpoint.save(tmp_path / "params.npz", params)
    gx.checkpoint.save(tmp_path / "state.npz", state)
    want_params, want_state = run(step, params, state, k, k + 100)
    # a fresh process would only have the files and the code:
    template = OPTIMIZERS[name]().init(PARAMS)
    params = gx.checkpoint.restore(tmp_path / "params.npz", like=PARAMS)
    state = gx.checkpoint.restore(tmp_path / "state.npz", like=template)
    got_params, got_state = run(step, params, state, k, k + 100)
    assert_bitwise(got_params, want_params)
    assert_bitwise(got_state, want_state)


@pytest.mark.parametrize("name", ["adam_scheduled", "rmsprop"])
def test_resume_from_orbax_is_bitwise(name, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    tx = OPTIMIZERS[name]()
    step = make_step(tx)
    params, state = run(step, PARAMS, tx.init(PARAMS), 0, 5)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
        checkpointer.wait_until_finished()
        target = {"params": PARAMS, "opt_state": OPTIMIZERS[name]().init(PARAMS)}
        restored = checkpointer.restore(tmp_path / "ckpt", target)
    want = run(step, params, state, 5, 105)
    got = run(step, restored["params"], restored["opt_state"], 5, 105)
    assert_bitwise(got, want)


def test_hyperparams_set_by_hand_survive_a_checkpoint(tmp_path):
    tx = gx.adam(0.01)
    state = gx.set_hyperparams(tx.init(PARAMS), learning_rate=3e-4)
    gx.checkpoint.save(tmp_path / "s.npz", state)
    restored = gx.checkpoint.restore(tmp_path / "s.npz", like=tx.init(PARAMS))
    assert float(gx.get_hyperparams(restored)["learning_rate"]) == np.float32(3e-4)


def test_restore_names_the_mismatch(tmp_path):
    gx.checkpoint.save(tmp_path / "s.npz", gx.adam(0.1).init(PARAMS))
    with pytest.raises(ValueError, match="has no array for"):
        gx.checkpoint.restore(tmp_path / "s.npz", like=gx.rmsprop(0.1, centered=True).init(PARAMS))
    other = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}
    with pytest.raises(ValueError, match=r"\['w'\].*float32\[2, 3\].*float32\[3, 2\]"):
        gx.checkpoint.restore(tmp_path / "s.npz", like=gx.adam(0.1).init(other))


def test_bfloat16_state_round_trips_exactly(tmp_path):
    params = {"w": jnp.array([1.5, -2.25, 3e-3], jnp.bfloat16)}
    tx = gx.adam(0.1)
    _, state = tx.update(params, tx.init(params), params)
    gx.checkpoint.save(tmp_path / "s.npz", state)
    assert_bitwise(gx.checkpoint.restore(tmp_path / "s.npz", like=tx.init(params)), state)


# --- non-finite values ------------------------------------------------------------------------


def test_apply_if_finite_skips_bad_steps_as_if_they_never_happened():
    inner = gx.adam(0.01)
    tx = gx.apply_if_finite(inner, max_consecutive_skips=3)
    bad = {1, 4, 5}
    params, state = PARAMS, tx.init(PARAMS)
    ref_params, ref_state = PARAMS, inner.init(PARAMS)
    update, ref_update = jax.jit(tx.update), jax.jit(inner.update)
    for k in range(8):
        grads = grads_at(params, k)
        if k in bad:
            poison = jnp.nan if k != 4 else jnp.inf
            grads = {"w": grads["w"].at[0, 1].set(poison), "b": grads["b"]}
            before = (params, state.inner_state)
        updates, state = update(grads, state, params)
        params = gx.apply_updates(params, updates)
        if k in bad:
            assert_bitwise((params, state.inner_state), before)  # untouched
            assert not bool(state.last_finite)
            continue
        ref_updates, ref_state = ref_update(grads_at(ref_params, k), ref_state, ref_params)
        ref_params = gx.apply_updates(ref_params, ref_updates)
        assert_bitwise(params, ref_params)
    assert_bitwise(state.inner_state, ref_state)
    assert int(state.total_skipped) == 3 and int(state.consecutive_skipped) == 0


def test_apply_if_finite_gives_up_loudly():
    """Outside jit the update itself raises the error, catchable by its name, in a short message."""
    tx = gx.apply_if_finite(gx.sgd(0.1), max_consecutive_skips=2)
    state = tx.init(PARAMS)
    nan = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), PARAMS)
    _, state = tx.update(nan, state, PARAMS)
    assert int(state.consecutive_skipped) == 1 and not bool(state.gave_up)
    with pytest.raises(gx.NonFiniteUpdatesError, match="2 steps in a row had NaN or infinite") as e:
        tx.update(nan, state, PARAMS)
    assert len(str(e.value)) < 200


def test_a_jitted_apply_if_finite_gives_up_through_its_state():
    """A jitted step cannot raise a Python error: it warns, flags the state, and stays at zero."""
    tx = gx.apply_if_finite(gx.sgd(0.1), max_consecutive_skips=2)
    update = jax.jit(tx.update)
    state = tx.init(PARAMS)
    nan = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), PARAMS)
    _, state = update(nan, state, PARAMS)
    gx.raise_if_gave_up(state)  # one skip: nothing to raise
    with pytest.warns(RuntimeWarning, match="2 steps in a row") as record:
        updates, state = jax.block_until_ready(update(nan, state, PARAMS))
    assert len(record) == 1 and len(str(record[0].message)) < 300
    assert bool(state.gave_up) and all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    updates, state = update(grads_at(PARAMS, 0), state, PARAMS)  # a finite step is applied,
    assert bool(state.gave_up)  # and the flag stays, for a check every few steps
    with pytest.raises(gx.NonFiniteUpdatesError, match="gave up") as e:
        gx.raise_if_gave_up({"opt": (state, gx.EmptyState())})
    assert len(str(e.value)) < 200
    with pytest.raises(ValueError, match="outside jit"):
        jax.jit(gx.raise_if_gave_up)(state)


def test_apply_if_finite_catches_a_schedule_that_turns_nan():
    # finite at step 0 (checked when built), NaN from step 2 on
    tx = gx.apply_if_finite(gx.sgd(lambda count: jnp.where(count >= 2, jnp.nan, 0.1)))
    params, state = PARAMS, tx.init(PARAMS)
    for k in range(4):
        updates, state = tx.update(grads_at(params, k), state, params)
        params = gx.apply_updates(params, updates)
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params))
    assert int(state.total_skipped) == 2


def test_optax_apply_if_finite_agrees_on_the_counts():
    ours = gx.apply_if_finite(gx.sgd(0.1), max_consecutive_skips=10)
    theirs = optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=10)
    s_ours, s_theirs = ours.init(PARAMS), theirs.init(PARAMS)
    for k in range(6):
        g = grads_at(PARAMS, k)
        if k % 2:
            g = jax.tree.map(lambda x: x * jnp.inf, g)
        u_ours, s_ours = ours.update(g, s_ours, PARAMS)
        u_theirs, s_theirs = theirs.update(g, s_theirs, PARAMS)
        jax.tree.map(np.testing.assert_array_equal, u_ours, u_theirs)
    assert int(s_ours.total_skipped) == int(s_theirs.total_notfinite) == 3


def poisoned(x, below):
    """sum(x^2), NaN (value, gradient and Hessian) where sum(x) < below."""
    return jnp.sum(x**2) * jnp.where(jnp.sum(x) < below, jnp.nan, 1.0)


# one hashable objective for every call below: the spectral tools compile once per (objective,
# shapes, options) and reuse that program at a new point, so its NaN point ones(4) (sum 4 < 10)
# and its finite point 3 * ones(4) share each tool's compile; the eigenpairs call has the
# options classify_critical_point(method="lanczos") passes on (k = 2 = n // 2 at both ends,
# 400 products, key None), so the verdict reuses that program too (13 -> 8 s of CPU)
NAN_OBJECTIVE = functools.partial(poisoned, below=10.0)


def spectral_tools(x):
    pairs = gx.hessian.hessian_eigenpairs(NAN_OBJECTIVE, x, k=2, which="both", max_matvecs=400)
    return pairs, gx.hessian.trace(NAN_OBJECTIVE, x)


@SLOW
def test_minimize_and_hessian_tools_report_non_finite_values():
    from gradxform.hessian.operators import _on_hessian_compiled

    x0 = jnp.ones(4)
    sol = gx.minimize(NAN_OBJECTIVE, x0)
    assert int(sol.status) == gx.Status.NONFINITE and not sol.success
    pairs, trace = spectral_tools(x0)
    assert not bool(pairs.finite) and not bool(jnp.any(pairs.converged))
    assert not bool(trace.finite)
    for method in ("dense", "lanczos"):
        verdict = gx.hessian.classify_critical_point(NAN_OBJECTIVE, x0, method=method).verdict
        assert verdict == "not_finite", method
    # and the finite case says so, from the same two compiled programs
    compiled = _on_hessian_compiled._cache_size()
    pairs, trace = spectral_tools(3 * x0)
    assert bool(pairs.finite) and bool(trace.finite)
    np.testing.assert_allclose(pairs.values, [2.0, 2.0, 2.0, 2.0], rtol=1e-5)  # H = 2 I
    assert _on_hessian_compiled._cache_size() == compiled


# --- dtype policy -----------------------------------------------------------------------------


@functools.cache
def dtype_run(name, dtype, steps=3):
    """``steps`` updates of optimizer ``name`` in ``dtype``: params, state, init dtypes.

    Cached, so the float64 reference of each optimizer runs once for all its rows.
    """
    tx = OPTIMIZERS[name]()
    params = jax.tree.map(lambda p: p.astype(dtype), PARAMS)
    if jnp.issubdtype(jnp.dtype(dtype), jnp.complexfloating):
        params = jax.tree.map(lambda p: p * jnp.asarray(1 - 0.5j, dtype), params)
    state = tx.init(params)
    init_dtypes = jax.tree.map(lambda a: a.dtype, state)

    update = jax.jit(tx.update)
    for k in range(steps):
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads_at(params, k), params)
        updates, state = update(grads, state, params)
        params = gx.apply_updates(params, updates)
    return params, state, init_dtypes


# the fast loop runs Adam in every dtype, and momentum and RMSProp in bfloat16
FAST_BFLOAT16 = {"sgd_momentum", "rmsprop"}
DTYPE_ROWS = [
    pytest.param(name, dtype, marks=() if fast else SLOW)
    for name in ELEMENTWISE
    for dtype in DTYPES
    for fast in [name == "adam" or (name in FAST_BFLOAT16 and dtype == "bfloat16")]
]


@pytest.mark.parametrize("name, dtype", DTYPE_ROWS)
def test_dtype_matrix(name, dtype):
    with jax.enable_x64(dtype == "float64"):
        params, state, init_dtypes = dtype_run(name, dtype)
        # params keep their dtype, the state never changes dtype
        assert all(p.dtype == jnp.dtype(dtype) for p in jax.tree.leaves(params))
        assert jax.tree.map(lambda a: a.dtype, state) == init_dtypes
        # moments (state leaves shaped like params) follow the params, but second moments are
        # at least float32 (float16 squares underflow)
        real = jnp.dtype(gx.tree.real_dtype(jnp.dtype(dtype)))
        squares = jnp.promote_types(real, jnp.float32)
        shaped = [a for a in jax.tree.leaves(state) if a.shape in ((2, 3), (3,))]
        assert all(a.dtype in (jnp.dtype(dtype), real, squares) for a in shaped), name
        # scalars (counts and hyperparameters) are int32 and float32 (float64 with x64 params)
        scalar_float = jnp.float64 if dtype == "float64" else jnp.float32
        assert all(
            a.dtype in (jnp.int32, jnp.dtype(scalar_float), jnp.bool_)
            for a in jax.tree.leaves(state)
            if a.ndim == 0
        )
        # and the values follow the float64 run of the same optimizer
    with jax.enable_x64(True):
        ref_dtype = "complex128" if dtype == "complex64" else "float64"
        reference, _, _ = dtype_run(name, ref_dtype)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(reference)):
        got = np.asarray(got).astype(np.complex128 if dtype == "complex64" else np.float64)
        np.testing.assert_allclose(
            got,
            np.asarray(want),
            rtol=TOLERANCE[dtype],
            atol=TOLERANCE[dtype],
            err_msg=f"{name} {dtype}",
        )


def test_moment_dtype_option_keeps_float32_moments_for_bfloat16_params():
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), PARAMS)
    state = gx.adam(0.1, mu_dtype=jnp.float32, nu_dtype=jnp.float32).init(params)
    shaped = [a for a in jax.tree.leaves(state) if a.ndim > 0]
    assert shaped and all(a.dtype == jnp.float32 for a in shaped)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["adam", "amsgrad", "adagrad"])
def test_small_half_precision_gradients_still_move_the_params(name, dtype):
    """float16 squares of |g| <= 3e-3 underflow to 0: second moments default to float32.

    A constant gradient g has a closed-form step: Adam's and AMSGrad's bias-corrected
    moments are g and g^2, so the update is -lr g / (|g| + eps); AdaGrad's (from h = 0.1,
    the default) is -lr g / sqrt(0.1 + t g^2). Checked at every step against that
    float64 value.
    """
    lr, eps = 1e-3, 1e-8
    tx = {"adam": gx.adam, "amsgrad": gx.amsgrad, "adagrad": gx.adagrad}[name](lr)
    g = np.array([3e-3, -1e-3, 5e-4, -2e-4])
    params = jnp.ones(4, dtype)
    state = tx.init(params)
    assert jnp.dtype(jnp.float32) in {a.dtype for a in jax.tree.leaves(state) if a.shape == (4,)}
    update = jax.jit(tx.update)
    for t in range(1, 9):
        updates, state = update(jnp.asarray(g, dtype), state, params)
        want = -lr * g / (np.abs(g) + eps)
        if name == "adagrad":
            want = -lr * g / np.sqrt(0.1 + t * g**2)
        np.testing.assert_allclose(np.asarray(updates, np.float64), want, rtol=2e-2)
    assert gx.apply_updates(params, updates).dtype == jnp.dtype(dtype)


def test_an_explicit_second_moment_dtype_is_kept():
    params = jnp.ones(3, jnp.float16)
    state = gx.adam(0.1, nu_dtype=jnp.float16).init(params)
    assert {a.dtype for a in jax.tree.leaves(state) if a.ndim} == {jnp.dtype(jnp.float16)}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_complex_gradients_of_real_params_are_an_error_naming_the_leaf(name):
    """Cast to float32, 1 + 1j would lose its imaginary part: refused at the first step.

    The chain refuses them when given params, a moment kept in the param's dtype without
    them, and apply_updates in any case (plain SGD, whose one block keeps no moment).
    """
    tx = ELEMENTWISE[name]()
    grads = {"w": PARAMS["w"], "b": PARAMS["b"].astype(jnp.complex64) * (1 + 1j)}
    message = r"must be real for real \w+; got complex64 at \['b'\], where \w+ is float32"

    def first_step(params):
        updates, _ = jax.jit(tx.update)(grads, tx.init(PARAMS), params)
        return gx.apply_updates(PARAMS, updates)

    with pytest.raises(TypeError, match=message):
        first_step(PARAMS)
    if name not in ("adamw", "sgd_momentum"):  # weight decay needs params
        with pytest.raises(TypeError, match=message):
            first_step(None)
    with pytest.raises(TypeError, match=message):
        gx.apply_updates(PARAMS, grads)


# --- hostile input ----------------------------------------------------------------------------


def bad_update(grads, params=PARAMS):
    tx = gx.adam(0.1)
    return tx.update(grads, tx.init(params), params)


HOSTILE = {
    "wrong tree structure": (
        lambda: bad_update({"w": PARAMS["w"], "c": PARAMS["b"]}),
        ValueError,
        r"different tree structures.*\['c'\]",
    ),
    "shape mismatch": (
        lambda: bad_update({"w": jnp.ones((3, 2)), "b": PARAMS["b"]}),
        ValueError,
        r"differ in shape at \['w'\]: \(3, 2\)",
    ),
    "integer params": (
        lambda: gx.adam(0.1).init({"n": jnp.arange(3)}),
        TypeError,
        r"params must hold floating-point.*\['n'\] has dtype int32",
    ),
    "boolean params": (
        lambda: gx.sgd(0.1, 0.9).init({"m": jnp.array([True])}),
        TypeError,
        r"\['m'\] has dtype bool",
    ),
    "python scalar params": (
        lambda: gx.adam(0.1).init({"s": 1.0}),
        TypeError,
        r"params must hold arrays; the leaf at \['s'\] is a float",
    ),
    "python scalar grads": (
        lambda: bad_update({"w": 1.0, "b": PARAMS["b"]}),
        TypeError,
        r"updates must hold arrays; the leaf at \['w'\]",
    ),
    "learning rate of the wrong type": (lambda: gx.adam("0.1"), TypeError, "learning_rate must"),
    "negative learning rate": (
        lambda: gx.sgd(-1.0),
        ValueError,
        "learning_rate must be a real number >= 0",
    ),
    "decay out of range": (
        lambda: gx.adam(0.1, b2=1.0),
        ValueError,
        r"b2 must be a real number in \[0, 1\)",
    ),
    "non-scalar hyperparameter": (lambda: gx.sgd(jnp.ones(2)), TypeError, "learning_rate must"),
    "schedule returning NaN": (
        lambda: gx.sgd(lambda c: jnp.nan * c),
        ValueError,
        "learning_rate must be a schedule whose value at step 0 is finite; got nan",
    ),
    "schedule returning a vector": (
        lambda: gx.adam(lambda c: jnp.ones(3)),
        TypeError,
        "learning_rate must be a schedule returning a real scalar",
    ),
    "apply_if_finite limit": (
        lambda: gx.apply_if_finite(gx.sgd(0.1), 0),
        ValueError,
        "max_consecutive_skips must be an integer >= 1",
    ),
    "objective returning a vector": (
        lambda: gx.minimize(lambda x: x, jnp.ones(2)),
        ValueError,
        r"fun(\(params\))? must (be|return) a real (floating )?scalar",
    ),
    "zero tol": (
        lambda: gx.minimize(quadratic, jnp.ones(2), tol=0.0),
        ValueError,
        r"tol must be a \w+ number > 0",
    ),
    "negative tol": (
        lambda: gx.minimize(quadratic, jnp.ones(2), tol=-1e-3),
        ValueError,
        "tol must be",
    ),
    "maxiter=0": (
        lambda: gx.minimize(quadratic, jnp.ones(2), maxiter=0),
        ValueError,
        "maxiter must be an integer >= 1",
    ),
    "integer x0": (lambda: gx.minimize(quadratic, jnp.arange(2)), TypeError, "x0 must hold real"),
    "empty x0": (lambda: gx.minimize(quadratic, {}), ValueError, "x0 must hold at least one"),
    "hessian of a vector function": (
        lambda: gx.hessian.hessian_eigenpairs(lambda x: x, jnp.ones(3)),
        ValueError,
        "scalar",
    ),
    "checkpoint of a non-array": (
        lambda: gx.checkpoint.state_dict({"a": "text"}),
        TypeError,
        r"the leaf at \['a'\] is a str",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_is_a_clear_early_error(case):
    call, error, match = HOSTILE[case]
    with pytest.raises(error, match=match):
        call()


def test_none_leaves_and_empty_trees_are_fine():
    tx = gx.adam(0.1)
    params = {"w": jnp.ones(2), "frozen": None}
    updates, _ = tx.update(params, tx.init(params), params)
    assert updates["frozen"] is None and updates["w"].shape == (2,)
    updates, state = tx.update({}, tx.init({}), {})
    assert updates == {} and gx.apply_updates({}, updates) == {}


def test_errors_come_at_trace_time_not_inside_a_compiled_step():
    tx = gx.adam(0.1)
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match="differ in shape"):
        jax.jit(tx.update).lower({"w": jnp.ones((3, 2)), "b": PARAMS["b"]}, state, PARAMS)
