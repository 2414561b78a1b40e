"""Each building block against a plain NumPy reference of its formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

RNG = np.random.default_rng(1)
GRADS = RNG.normal(size=(6, 4)).astype(np.float32)  # 6 steps of a 4-vector


def run(tx, grads=GRADS, params=None):
    """Outputs of ``tx`` for each gradient in turn (one jitted scan)."""
    params = jnp.zeros(grads.shape[1:], grads.dtype) if params is None else params

    @jax.jit
    def go(grads):
        def step(state, g):
            u, state = tx.update(g, state, params)
            return state, u

        return jax.lax.scan(step, tx.init(params), grads)[1]

    return np.asarray(go(jnp.asarray(grads)))


def close(a, b, rtol=2e-6):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)))


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("dampening", [0.0, 0.4])
def test_momentum_matches_reference(nesterov, dampening):
    rho, v, want = 0.8, None, []
    for g in GRADS.astype(np.float64):
        v = g.copy() if v is None else rho * v + (1 - dampening) * g  # torch: v = g first
        want.append(g + rho * v if nesterov else v)
    close(run(gx.scale_by_momentum(rho, nesterov=nesterov, dampening=dampening)), np.array(want))


def test_ema_and_bias_correction_match_reference():
    b, m, v, first, second = 0.7, 0, 0, [], []
    for t, g in enumerate(GRADS.astype(np.float64), start=1):
        m = b * m + (1 - b) * g
        v = b * v + (1 - b) * g * g
        first.append(m / (1 - b**t))
        second.append(v)
    close(run(gx.chain(gx.ema_first_moment(b), gx.bias_correct(b))), np.array(first))
    close(run(gx.ema_second_moment(b)), np.array(second))


def test_centered_second_moment_is_variance_estimate():
    b, m, v, want = 0.6, 0, 0.5, []
    for g in GRADS.astype(np.float64):
        m = b * m + (1 - b) * g
        v = b * v + (1 - b) * g * g
        want.append(v - m * m)
    close(run(gx.ema_second_moment(b, centered=True, initial_value=0.5)), np.array(want))


def test_accumulate_squares_running_max_sqrt_match_reference():
    h = np.cumsum(GRADS.astype(np.float64) ** 2, axis=0) + 0.1
    close(run(gx.accumulate_squares(0.1)), h)
    close(run(gx.running_max()), np.maximum.accumulate(np.maximum(GRADS, 0), axis=0))
    squares = GRADS**2
    close(run(gx.sqrt_with_eps(0.5, eps_root=0.25), squares), np.sqrt(squares + 0.25) + 0.5)


def test_nesterov_first_moment_matches_reference():
    b, m, want = 0.9, 0, []
    for t, g in enumerate(GRADS.astype(np.float64), start=1):
        m = b * m + (1 - b) * g
        want.append(b * m / (1 - b ** (t + 1)) + (1 - b) * g / (1 - b**t))
    close(run(gx.nesterov_first_moment(0.9)), np.array(want))


def test_adagrad_and_rms_are_their_formulas():
    g = GRADS.astype(np.float64)
    h = np.cumsum(g**2, axis=0)
    close(run(gx.scale_by_sum_of_squares(0.0, 1e-7)), g / (np.sqrt(h) + 1e-7))
    close(run(gx.scale_by_sum_of_squares(0.0, 1e-7, eps_in_sqrt=True)), g / np.sqrt(h + 1e-7))
    v, want = 0, []
    for gt in g:
        v = 0.9 * v + 0.1 * gt * gt
        want.append(gt / (np.sqrt(v) + 1e-3))
    close(run(gx.scale_by_rms(0.9, 1e-3, eps_in_sqrt=False)), np.array(want))


def test_divide_returns_zero_where_nothing_was_seen():
    grads = np.zeros((2, 4), np.float32)
    grads[1, 0] = 2.0
    out = run(gx.scale_by_sum_of_squares(0.0, 0.0, eps_in_sqrt=True), grads)
    np.testing.assert_array_equal(out, [[0, 0, 0, 0], [1, 0, 0, 0]])


@pytest.mark.parametrize("dtype", ["float16", "float32", "complex64"])
def test_a_zero_denominator_gives_a_zero_update(dtype):
    """Adam with eps = 0 on a gradient with zero coordinates: optax's update there is 0/0
    = NaN, gradxform's is 0, and elsewhere they agree (its second moment in float16 as
    optax's is, for float16); the forward derivative there is finite."""
    import optax

    g = jnp.asarray([0.0, 2.0, 0.0, -0.5], dtype)
    ours = gx.adam(0.1, eps=0.0, nu_dtype=jnp.float16 if dtype == "float16" else None)
    theirs = optax.adam(0.1, eps=0.0)  # its nu is in the gradient's dtype
    params = jnp.zeros(4, dtype)

    def step(tx):
        return jax.jit(lambda g: tx.update(g, tx.init(params), params)[0])

    mine, reference = np.asarray(step(ours)(g)), np.asarray(step(theirs)(g))
    assert np.all(np.isnan(reference[[0, 2]])) and np.all(mine[[0, 2]] == 0)
    np.testing.assert_allclose(mine[[1, 3]], reference[[1, 3]], rtol=1e-3)
    if dtype != "complex64":  # (reverse mode meets sqrt'(0) = inf first: eps_root is for that)
        assert np.all(np.isfinite(np.asarray(jax.jit(jax.jacfwd(step(ours)))(g), float)))


def test_safe_divide_derivatives_are_finite_where_the_denominator_is_zero():
    """Both modes: d(num/den) where den != 0 (closed form), 0 where den == 0."""
    num, den = jnp.array([3.0, 0.0, -2.0]), jnp.array([2.0, 0.0, 0.0])
    for derivative in (jax.jacfwd, jax.jacrev):
        d_num, d_den = jax.jit(derivative(gx.tree.safe_divide, argnums=(0, 1)))(num, den)
        np.testing.assert_array_equal(np.diag(d_num), [0.5, 0.0, 0.0])
        np.testing.assert_array_equal(np.diag(d_den), [-3.0 / 4.0, 0.0, 0.0])
        assert np.count_nonzero(d_num - np.diag(np.diag(d_num))) == 0


def test_clipping_matches_reference():
    close(run(gx.clip(0.5)), np.clip(GRADS, -0.5, 0.5))
    norms = np.linalg.norm(GRADS, axis=1, keepdims=True)
    close(run(gx.clip_by_global_norm(1.5)), np.where(norms < 1.5, GRADS, GRADS / norms * 1.5))


def test_scale_schedule_and_weight_decay():
    close(run(gx.scale(-3.0)), -3 * GRADS)
    close(run(gx.scale_by_schedule(lambda t: 0.5**t)), GRADS * 0.5 ** np.arange(6)[:, None])
    params = jnp.arange(4.0)
    close(run(gx.add_decayed_weights(0.1), params=params), GRADS + 0.1 * np.arange(4.0))


def test_lr_flip_sign_is_the_only_sign_flip():
    close(run(gx.scale_by_learning_rate(0.1)), -0.1 * GRADS)
    close(run(gx.scale_by_learning_rate(0.1, flip_sign=False)), 0.1 * GRADS)


# --- the lecture's two momentum formulations -------------------------------------


def lecture_heavy_ball(lrs, rho, grads):
    """vx = rho * vx + dx; x -= learning_rate * vx."""
    x, vx, xs = np.zeros(grads.shape[1]), 0.0, []
    for lr, dx in zip(lrs, grads):
        vx = rho * vx + dx
        x = x - lr * vx
        xs.append(x)
    return np.array(xs)


def lecture_velocity(lrs, rho, grads):
    """vx = rho * vx - learning_rate * dx; x += vx."""
    x, vx, xs = np.zeros(grads.shape[1]), 0.0, []
    for lr, dx in zip(lrs, grads):
        vx = rho * vx - lr * dx
        x = x + vx
        xs.append(x)
    return np.array(xs)


def iterates(tx, grads):
    return np.cumsum(run(tx, grads), axis=0)  # x starts at 0, gradients fixed


def test_momentum_formulations_agree_for_constant_lr():
    g = GRADS.astype(np.float64)
    heavy = iterates(gx.sgd(0.1, momentum=0.9), GRADS)
    velocity = iterates(gx.sgd_velocity(0.1, momentum=0.9), GRADS)
    close(heavy, lecture_heavy_ball([0.1] * 6, 0.9, g))
    close(velocity, lecture_velocity([0.1] * 6, 0.9, g))
    close(heavy, velocity)


def test_momentum_formulations_differ_when_lr_changes():
    g = GRADS.astype(np.float64)
    lrs = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01]  # step decay after 3 updates
    schedule = lambda t: jnp.where(t < 3, 0.1, 0.01)  # noqa: E731
    heavy = iterates(gx.sgd(schedule, momentum=0.9), GRADS)
    velocity = iterates(gx.sgd_velocity(schedule, momentum=0.9), GRADS)
    close(heavy, lecture_heavy_ball(lrs, 0.9, g))
    close(velocity, lecture_velocity(lrs, 0.9, g))
    close(heavy[:3], velocity[:3])
    assert np.max(np.abs(heavy[3:] - velocity[3:])) > 1e-2


# --- the lecture's code slips ----------------------------------------------------


def test_lecture_adam_snippet_is_adam_without_bias_correction():
    """The snippet steps with the biased moments; composing without bias_correct gives it."""
    g = GRADS.astype(np.float64)
    m = v = 0
    want = []
    for dx in g:
        m = 0.9 * m + 0.1 * dx
        v = 0.999 * v + 0.001 * dx * dx
        want.append(-1e-3 * m / (np.sqrt(v) + 1e-7))
    biased = gx.chain(
        gx.divide(
            gx.ema_first_moment(0.9),
            gx.chain(gx.ema_second_moment(0.999), gx.sqrt_with_eps(1e-7)),
        ),
        gx.scale_by_learning_rate(1e-3),
    )
    close(run(biased), np.array(want))
    # Adam proper corrects: its first step is ~ -lr * sign(g), the snippet's ~ -lr * 0.1/sqrt(0.001)
    adam_first = run(gx.adam(1e-3, eps=1e-7))[0]
    close(adam_first, -1e-3 * np.sign(g[0]), rtol=1e-4)
    assert np.all(np.abs(want[0]) > 3 * np.abs(adam_first))


def test_lecture_rmsprop_plus_equals_diverges_and_ours_stays_bounded():
    g = np.ones((50, 1))
    literal = 0.0
    for dx in g:
        literal += 0.9 * literal + 0.1 * dx * dx  # the lecture's line, as written
    v = run(gx.ema_second_moment(0.9), g.astype(np.float32))
    assert literal[0] > 1e10
    np.testing.assert_allclose(v[-1], 1 - 0.9**50, rtol=1e-6)


# --- dtypes ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "complex64"])
def test_params_keep_their_dtype(dtype):
    params = {"w": jnp.ones((2, 3), dtype), "b": jnp.ones(3, dtype)}
    grads = jax.tree.map(lambda p: p * 0.5, params)
    for tx in [gx.sgd(0.1, 0.9), gx.adam(0.1), gx.rmsprop(0.1, centered=True), gx.adagrad(0.1)]:
        state = tx.init(params)
        updates, new_state = tx.update(grads, state, params)
        new_params = gx.apply_updates(params, updates)
        assert jax.tree.map(lambda a: a.dtype, new_params) == jax.tree.map(
            lambda a: a.dtype, params
        )
        assert jax.tree.map(lambda a: a.dtype, new_state) == jax.tree.map(lambda a: a.dtype, state)


def test_moment_dtypes_are_configurable():
    params = jnp.ones(3, jnp.bfloat16)
    state = gx.adam(0.1, mu_dtype=jnp.float32, nu_dtype=jnp.float32).init(params)
    moments = [s for s in jax.tree.leaves(state) if s.shape == (3,)]
    assert [m.dtype for m in moments] == [jnp.float32, jnp.float32]


def test_complex_adam_matches_reference():
    g = (GRADS[:, :2] + 1j * GRADS[:, 2:]).astype(np.complex128)
    m = v = 0
    want = []
    for t, gt in enumerate(g, start=1):
        m = 0.9 * m + 0.1 * gt
        v = 0.999 * v + 0.001 * np.abs(gt) ** 2
        want.append(-0.1 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8))
    out = run(gx.adam(0.1), g.astype(np.complex64))
    assert out.dtype == np.complex64
    close(out, np.array(want), rtol=2e-5)


def test_step_count_saturates_instead_of_overflowing():
    tx = gx.adam(0.1)
    state = tx.init(jnp.zeros(2))
    top = jnp.iinfo(jnp.int32).max
    state = jax.tree.map(lambda x: jnp.full_like(x, top - 1) if x.dtype == jnp.int32 else x, state)
    for _ in range(3):
        updates, state = tx.update(jnp.ones(2), state)
    counts = [x for x in jax.tree.leaves(state) if x.dtype == jnp.int32]
    assert all(int(c) == top for c in counts)
    assert np.all(np.isfinite(updates))
