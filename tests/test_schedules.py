"""Schedules against closed-form NumPy (float64), optax, and recorded torch.optim.lr_scheduler."""

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradxform as gx
from tests.helpers import trajectory
from tests.reference.torch_configs import (
    BASE_LR,
    CYCLE_SCHEDULES,
    CYCLE_TRAJECTORIES,
    TORCH_SCHEDULES,
)

S = gx.schedules
TOP = 2**31 - 1


# --- closed-form references, float64 --------------------------------------------------


def ref_cosine(v, T, a, t, p=1.0):
    t = min(t, T)
    return v * ((1 - a) * (0.5 * (1 + math.cos(math.pi * t / T))) ** p + a)


def ref_sgdr(v, T0, mult, a, t):
    start, T = 0, T0
    while t >= start + T:
        start, T = start + T, T * mult
    return v * ((1 - a) * 0.5 * (1 + math.cos(math.pi * (t - start) / T)) + a)


def ref_poly(v0, v1, p, T, begin, t):
    d = min(max(t - begin, 0), T)
    return (v0 - v1) * (1 - d / T) ** p + v1


def ref_one_cycle(levels, ends, cosine, t):
    """torch OneCycleLR's phases in float64: levels[i] = (start, end) of phase i."""
    t, start = min(t, ends[-1]), 0.0
    for end, (a, b) in zip(ends, levels):
        if t <= end or end == ends[-1]:
            f = (t - start) / (end - start)
            return b + (a - b) / 2 * (math.cos(math.pi * f) + 1) if cosine else a + (b - a) * f
        start = end


def ref_cyclic(base, top, up, down, scale, t):
    """torch CyclicLR in float64; scale(cycle, t) -> the amplitude factor."""
    cycle = math.floor(1 + t / (up + down))
    x = 1.0 + t / (up + down) - cycle
    ratio = up / (up + down)
    h = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    return base + (top - base) * h * scale(cycle, t)


def ref_warmup_cosine(peak, W, total, v0, ve, t):
    if t < W:
        return v0 + (peak - v0) * t / W
    return ve + (peak - ve) * 0.5 * (1 + math.cos(math.pi * min(t - W, total - W) / (total - W)))


CASES = {
    # name: (schedule, reference(t), interesting counts)
    "constant": (S.constant(0.3), lambda t: 0.3, [0, 1, 10**6, TOP]),
    "step_decay": (
        S.step_decay(0.1, 0.5, 30),
        lambda t: 0.1 * 0.5 ** (t // 30),
        [0, 29, 30, 31, 59, 60, 61, 300],
    ),
    "piecewise_constant": (
        S.piecewise_constant(0.1, [100, 250], [0.5, 0.1]),
        lambda t: 0.1 * (0.5 if t >= 100 else 1) * (0.1 if t >= 250 else 1),
        [0, 99, 100, 101, 249, 250, 251, 10**6, TOP],
    ),
    "exponential_rate": (
        S.exponential_decay(0.1, 0.9, 7, transition_begin=20),
        lambda t: 0.1 * 0.9 ** (max(t - 20, 0) / 7),
        [0, 19, 20, 21, 27, 100, 500],
    ),
    "exponential_k": (
        S.exponential_decay(2.0, k=0.01),
        lambda t: 2.0 * math.exp(-0.01 * t),
        [0, 1, 100, 1000],
    ),
    "exponential_staircase_floor": (
        S.exponential_decay(0.1, 0.5, 50, staircase=True, end_value=1e-3),
        lambda t: max(0.1 * 0.5 ** (t // 50), 1e-3),
        [0, 49, 50, 51, 99, 100, 300, 350, 10**6, TOP],
    ),
    "inverse_time": (
        S.inverse_time_decay(0.1, 0.05),
        lambda t: 0.1 / (1 + 0.05 * t),
        [0, 1, 20, 10**4, TOP],
    ),
    "inverse_time_staircase": (
        S.inverse_time_decay(0.1, 0.5, 10, staircase=True),
        lambda t: 0.1 / (1 + 0.5 * (t // 10)),
        [0, 9, 10, 11, 100],
    ),
    "cosine": (
        S.cosine_decay(0.1, 500),
        lambda t: ref_cosine(0.1, 500, 0.0, t),
        [0, 1, 250, 499, 500, 501, 10**6, TOP],
    ),
    "cosine_floor_exponent": (
        S.cosine_decay(0.1, 500, 0.05, exponent=2.0),
        lambda t: ref_cosine(0.1, 500, 0.05, t, 2.0),
        [0, 1, 333, 499, 500, 501, TOP],
    ),
    "cosine_restarts": (
        S.cosine_decay(1.0, 50, 0.01, warm_restarts=True),
        lambda t: ref_sgdr(1.0, 50, 1, 0.01, t),
        [0, 49, 50, 51, 99, 100, 1000, 10**6 + 7],
    ),
    "cosine_restarts_mult3": (
        S.cosine_decay(1.0, 10, 0.0, warm_restarts=True, period_mult=3),
        lambda t: ref_sgdr(1.0, 10, 3, 0.0, t),
        [0, 9, 10, 11, 39, 40, 41, 129, 130, 131, 1209, 1210, 5000],
    ),
    "linear": (
        S.linear_decay(0.1, 0.01, 300, 50),
        lambda t: ref_poly(0.1, 0.01, 1, 300, 50, t),
        [0, 49, 50, 51, 200, 349, 350, 351, TOP],
    ),
    "linear_up": (
        S.linear_decay(0.01, 0.1, 20),
        lambda t: ref_poly(0.01, 0.1, 1, 20, 0, t),
        [0, 1, 19, 20, 21],
    ),
    "polynomial": (
        S.polynomial_decay(0.1, 0.01, 3.0, 300),
        lambda t: ref_poly(0.1, 0.01, 3, 300, 0, t),
        [0, 1, 150, 299, 300, 301, TOP],
    ),
    "inverse_sqrt": (
        S.inverse_sqrt_decay(1.0),
        lambda t: 1 / math.sqrt(t + 1),
        [0, 1, 3, 10**4, TOP],
    ),
    "inverse_sqrt_warmup": (
        S.inverse_sqrt_decay(1e-3, 4000),
        lambda t: 1e-3 * min((t + 1) / 4000, math.sqrt(4000 / (t + 1))),
        [0, 1, 3998, 3999, 4000, 10**5, TOP],
    ),
    "warmup_linear": (
        S.warmup(0.1, 100, 0.01),
        lambda t: 0.01 + 0.09 * min(t, 100) / 100,
        [0, 1, 99, 100, 101, TOP],
    ),
    "warmup_cosine": (
        S.warmup(0.1, 100, shape="cosine"),
        lambda t: 0.1 * (1 - math.cos(math.pi * min(t, 100) / 100)) / 2,
        [0, 1, 50, 99, 100, 101, TOP],
    ),
    "join_warmup_cosine": (
        S.join([S.warmup(0.1, 50), S.cosine_decay(0.1, 400, 0.01)], [50]),
        lambda t: 0.1 * t / 50 if t < 50 else ref_cosine(0.1, 400, 0.01, t - 50),
        [0, 49, 50, 51, 449, 450, 451, TOP],
    ),
    "warmup_cosine_schedule": (
        S.warmup_cosine(0.1, 50, 450, 0.01, 0.001),
        lambda t: ref_warmup_cosine(0.1, 50, 450, 0.01, 0.001, t),
        [0, 1, 49, 50, 51, 250, 449, 450, 451, TOP],
    ),
    "warmup_cosine_schedule_no_warmup": (
        S.warmup_cosine(0.1, 0, 300),
        lambda t: ref_warmup_cosine(0.1, 0, 300, 0.0, 0.0, t),
        [0, 1, 150, 299, 300, TOP],
    ),
    "one_cycle": (
        S.one_cycle(1000, 0.1),
        lambda t: ref_one_cycle([(0.004, 0.1), (0.1, 4e-7)], [299.0, 999.0], True, t),
        [0, 1, 298, 299, 300, 301, 700, 998, 999, 1000, TOP],
    ),
    "one_cycle_three_phase_linear": (
        S.one_cycle(777, 1.0, 0.21, "linear", 10.0, 100.0, three_phase=True),
        lambda t: ref_one_cycle(
            [(0.1, 1.0), (1.0, 0.1), (0.1, 1e-3)],
            [0.21 * 777 - 1, 2 * 0.21 * 777 - 2, 776.0],
            False,
            t,
        ),
        [0, 1, 162, 163, 164, 324, 325, 326, 775, 776, 777, TOP],
    ),
    "one_cycle_momentum": (
        S.one_cycle_momentum(1000),
        lambda t: ref_one_cycle([(0.95, 0.85), (0.85, 0.95)], [299.0, 999.0], True, t),
        [0, 1, 299, 300, 998, 999, TOP],
    ),
    "cyclic_triangular2": (
        S.cyclic(0.01, 0.1, 40, 60, mode="triangular2"),
        lambda t: ref_cyclic(0.01, 0.1, 40, 60, lambda n, t: 0.5 ** (n - 1), t),
        [0, 1, 39, 40, 41, 99, 100, 101, 140, 10**4, TOP],
    ),
    "cyclic_exp_range": (
        S.cyclic(0.001, 0.1, 30, mode="exp_range", gamma=0.995),
        lambda t: ref_cyclic(0.001, 0.1, 30, 30, lambda n, t: 0.995**t, t),
        [0, 1, 29, 30, 31, 59, 60, 1000, TOP],
    ),
    "cyclic_scale_fn_iterations": (
        S.cyclic(0.5, 1.5, 20, 5, scale_fn=lambda t: 1 / (1 + t / 100), scale_mode="iterations"),
        lambda t: ref_cyclic(0.5, 1.5, 20, 5, lambda n, t: 1 / (1 + t / 100), t),
        [0, 1, 19, 20, 21, 24, 25, 26, 10**5],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_closed_form(name):
    schedule, reference, counts = CASES[name]
    jitted = jax.jit(schedule)
    for t in counts:
        want = reference(t)
        for got in (schedule(t), jitted(jnp.int32(t))):  # concrete and traced
            assert got.dtype == jnp.float32, (name, t)
            np.testing.assert_allclose(
                float(got), want, rtol=1e-6, atol=1e-30, err_msg=f"{name} at {t}"
            )


@pytest.mark.slow  # nine constant-folded compiles per schedule
@pytest.mark.parametrize("name", sorted(CASES))
def test_concrete_traced_and_vectorised_agree(name):
    schedule = CASES[name][0]
    counts = np.array([0, 1, 7, 49, 50, 51, 333, 10**6, TOP], np.int32)
    batched = np.asarray(jax.jit(schedule)(jnp.asarray(counts)))
    # XLA rounds differently when it constant-folds a concrete count, runs ops one by one
    # (eager) or fuses them: agreement is to a few float32 ulps, inside the 1e-6 bar.
    for c, b in zip(counts, batched):
        np.testing.assert_array_max_ulp(np.float32(jax.jit(lambda c=int(c): schedule(c))()), b, 8)
        np.testing.assert_array_max_ulp(np.float32(schedule(np.int64(c))), b, maxulp=8)


OPTAX = {
    "exponential": (
        S.exponential_decay(0.1, 0.9, 7, transition_begin=20),
        optax.exponential_decay(0.1, 7, 0.9, transition_begin=20),
    ),
    "exponential_staircase": (
        S.exponential_decay(0.1, 0.5, 50, staircase=True, end_value=1e-3),
        optax.exponential_decay(0.1, 50, 0.5, staircase=True, end_value=1e-3),
    ),
    "cosine": (
        S.cosine_decay(0.1, 500, 0.05, exponent=2.0),
        optax.cosine_decay_schedule(0.1, 500, 0.05, exponent=2.0),
    ),
    "linear": (S.linear_decay(0.1, 0.01, 300, 50), optax.linear_schedule(0.1, 0.01, 300, 50)),
    "polynomial": (
        S.polynomial_decay(0.1, 0.01, 3.0, 300, 50),
        optax.polynomial_schedule(0.1, 0.01, 3.0, 300, 50),
    ),
    "piecewise_constant": (
        S.piecewise_constant(0.1, [100, 300], [0.5, 0.1]),
        optax.piecewise_constant_schedule(0.1, {100: 0.5, 300: 0.1}),
    ),
    "constant": (S.constant(0.1), optax.constant_schedule(0.1)),
    "join_warmup_cosine": (
        S.join([S.warmup(0.1, 50), S.cosine_decay(0.1, 400, 0.01)], [50]),
        optax.warmup_cosine_decay_schedule(0.0, 0.1, 50, 450, 0.001),
    ),
    "warmup_cosine": (
        S.warmup_cosine(0.1, 50, 450, 0.01, 0.001),
        optax.warmup_cosine_decay_schedule(0.01, 0.1, 50, 450, 0.001),
    ),
    "warmup_cosine_exponent": (
        S.warmup_cosine(1.0, 100, 700, end_value=0.05, exponent=2.0),
        optax.warmup_cosine_decay_schedule(0.0, 1.0, 100, 700, 0.05, exponent=2.0),
    ),
}


@pytest.mark.parametrize("name", sorted(OPTAX))
def test_matches_optax(name):
    """Within 5e-6: optax raises the float32-rounded rate (its exponential drifts by ~4e-6
    over 1,000 steps) and cancels in 1 + cos near the end of a cosine; the closed-form
    tests above pin gradxform to 1e-6 of the exact value."""
    ours, theirs = OPTAX[name]
    counts = jnp.arange(1000)
    want = np.asarray(jax.vmap(theirs)(counts))
    np.testing.assert_allclose(S.evaluate(ours, 1000), want, rtol=5e-6, atol=1e-30)


TORCH = np.load(pathlib.Path(__file__).parent / "reference" / "torch_schedules.npz")


@pytest.mark.parametrize("name", sorted(TORCH_SCHEDULES))
def test_matches_recorded_torch_lr_scheduler(name):
    steps, _, make = TORCH_SCHEDULES[name]
    ours = S.evaluate(make(S, BASE_LR), steps)
    np.testing.assert_allclose(ours, TORCH[name], rtol=1e-6, atol=0, err_msg=name)


def test_matches_live_torch_when_available():
    pytest.importorskip("torch")
    from tests.reference.record_torch import torch_learning_rates

    for name in ("CosineAnnealingWarmRestarts", "SequentialLR"):
        steps, _, make = TORCH_SCHEDULES[name]
        np.testing.assert_allclose(
            S.evaluate(make(S, BASE_LR), steps), torch_learning_rates(name), rtol=1e-6
        )


CYCLES = np.load(pathlib.Path(__file__).parent / "reference" / "torch_lr_schedulers.npz")


@pytest.mark.parametrize("name", sorted(CYCLE_SCHEDULES))
def test_cycles_match_recorded_torch_lr_and_momentum(name):
    """OneCycleLR / CyclicLR over 333-400 steps: float32 within 1e-6 of torch's float64
    (measured: 2.3e-7 at most); the momentum is what torch sets as SGD's momentum and
    as Adam's beta1."""
    _, _, make_lr, make_momentum = CYCLE_SCHEDULES[name]
    lr, momentum = CYCLES[f"cycle/{name}/lr"], CYCLES[f"cycle/{name}/momentum"]
    assert len(lr) >= 333
    np.testing.assert_allclose(S.evaluate(make_lr(S), len(lr)), lr, rtol=1e-6, atol=0)
    ours = S.evaluate(make_momentum(S), len(momentum))
    np.testing.assert_allclose(ours, momentum, rtol=1e-6, atol=0)
    if f"cycle/{name}/adam_beta1" in CYCLES.files:
        np.testing.assert_allclose(ours, CYCLES[f"cycle/{name}/adam_beta1"], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CYCLE_SCHEDULES))
def test_cycles_match_recorded_torch_in_float64(name, x64):
    _, _, make_lr, make_momentum = CYCLE_SCHEDULES[name]
    for make, key in ((make_lr, "lr"), (make_momentum, "momentum")):
        want = CYCLES[f"cycle/{name}/{key}"]
        got = S.evaluate(make(S), len(want))
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, err_msg=f"{name} {key}")


ONE_CYCLE_OPTIMIZERS = {  # the recorded torch runs use OneCycleLR(total_steps=200)
    "sgd_one_cycle": lambda: gx.sgd(S.one_cycle(200, 0.1), momentum=S.one_cycle_momentum(200)),
    "adam_one_cycle": lambda: gx.adam(S.one_cycle(200, 0.01), b1=S.one_cycle_momentum(200)),
}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow if "adam" in n else ()) for n in CYCLE_TRAJECTORIES],
)
def test_one_cycle_through_schedulable_momentum_equals_torch_trajectory(name, dtype):
    """torch's SGD (momentum) and Adam (beta1) under OneCycleLR(cycle_momentum=True),
    200 steps of the shared problem, against gradxform's scheduled learning rate and
    momentum / b1 (bounds as tests/test_torch_parity.py)."""
    ours = trajectory(ONE_CYCLE_OPTIMIZERS[name](), dtype)
    rtol = {"float32": 2e-5, "float64": 1e-12}[dtype]
    for leaf, values in ours.items():
        want = CYCLES[f"trajectory/{name}/{dtype}/{leaf}"]
        np.testing.assert_allclose(
            values, want, rtol=rtol, atol=rtol * np.max(np.abs(want)), err_msg=f"{name} {leaf}"
        )


def test_one_cycle_holds_its_last_value_and_momentum_mirrors_it():
    lr = S.evaluate(S.one_cycle(100, 1.0), 130)
    momentum = S.evaluate(S.one_cycle_momentum(100), 130)
    assert np.all(lr[99:] == lr[99]) and lr[99] == np.float32(1 / 25 / 1e4)
    assert np.argmax(lr) == np.argmin(momentum) == 29  # the peak at count pct_start * T - 1
    assert momentum[0] == momentum[-1] == np.float32(0.95)


# --- properties -----------------------------------------------------------------------

DECAYS = {
    "step_decay": (S.step_decay(1.0, 0.7, 13), 0.0),
    "exponential": (S.exponential_decay(1.0, 0.97, 3, end_value=0.2), 0.2),
    "inverse_time": (S.inverse_time_decay(1.0, 0.1), 0.0),
    "cosine": (S.cosine_decay(1.0, 300, 0.1, exponent=1.5), 0.1),
    "polynomial": (S.polynomial_decay(1.0, 0.05, 0.5, 300, 10), 0.05),
    "inverse_sqrt": (S.inverse_sqrt_decay(1.0), 0.0),
}


@pytest.mark.parametrize("name", sorted(DECAYS))
def test_decay_never_rises_and_respects_its_floor(name):
    schedule, floor = DECAYS[name]
    values = S.evaluate(schedule, 1000)
    assert np.all(np.diff(values) <= 0), name
    assert np.all(values >= np.float32(floor)), name
    assert values[0] == np.float32(1.0)


@settings(max_examples=40, deadline=None)
@given(
    peak=st.floats(1e-5, 10.0),
    warmup_steps=st.integers(1, 500),
    decay_steps=st.integers(1, 5000),
    alpha=st.floats(0.0, 1.0),
    count=st.integers(0, TOP),
)
def test_warmup_cosine_join_is_continuous_bounded_and_never_overflows(
    peak, warmup_steps, decay_steps, alpha, count
):
    schedule = S.join(
        [S.warmup(peak, warmup_steps), S.cosine_decay(peak, decay_steps, alpha)], [warmup_steps]
    )
    at, before = float(schedule(warmup_steps)), float(schedule(warmup_steps - 1))
    assert at == pytest.approx(peak, rel=1e-6)
    # no jump: the last step into the boundary is one warmup increment (plus float32 rounding)
    assert abs(at - before) <= peak / warmup_steps + 4e-7 * peak
    value = float(schedule(count))
    assert math.isfinite(value) and -1e-12 <= value <= peak * (1 + 1e-6)


def test_float32_for_every_integer_dtype():
    schedule = S.cosine_decay(0.1, 100)
    for count in (3, np.int8(3), np.uint16(3), np.int64(3), jnp.int32(3)):
        assert schedule(count).dtype == jnp.float32
    with pytest.raises(TypeError, match="count must be an integer"):
        schedule(3.0)


def test_schedule_drives_any_hyperparameter_without_recompiling():
    tx = gx.sgd(S.cosine_decay(0.1, 10), momentum=S.warmup(0.9, 5, 0.5))
    params = jnp.ones(3)
    step = jax.jit(tx.update)
    state = tx.init(params)
    for t in range(7):
        _, state = step(jnp.ones(3), state, params)
        values = gx.get_hyperparams(state)
        np.testing.assert_allclose(values["learning_rate"], ref_cosine(0.1, 10, 0, t), rtol=1e-6)
        np.testing.assert_allclose(values["momentum"], 0.5 + 0.4 * min(t, 5) / 5, rtol=1e-6)
    assert step._cache_size() == 1


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: gx.sgd(S.constant(-0.1)),
            "learning_rate must be a schedule whose value at step 0 is a real number >= 0; "
            "got -0.1",
        ),
        (
            lambda: gx.adam(S.linear_decay(-1e-3, 1e-3, 10)),
            "learning_rate must be a schedule whose value at step 0 is a real number >= 0; "
            "got -0.001",
        ),
        (
            lambda: gx.adam(0.1, b1=S.constant(1.0)),
            r"b1 must be a schedule whose value at step 0 is a real number in \[0, 1\); got 1.0",
        ),
    ],
)
def test_a_schedule_out_of_range_at_step_0_raises_when_built(build, message):
    """As gx.sgd(-0.1) does: a negative learning rate would turn descent into ascent."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        build()


def test_a_schedule_leaving_its_range_later_is_clamped_and_counted():
    """lr_t = 0.1 - 0.05 t is negative from t = 3: SGD takes steps max(lr_t, 0) * g (never
    ascent), and the state counts the clamped updates, under jit without retracing."""
    tx = gx.sgd(S.linear_decay(0.1, -0.2, 6))  # 0.1, 0.05, 0, -0.05, -0.1, -0.15, -0.2, ...
    grads = jnp.array([1.0, -2.0])

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grads, state)
        return gx.apply_updates(params, updates), state

    params, state = jnp.zeros(2), tx.init(jnp.zeros(2))
    rates = [0.1 - 0.05 * t for t in range(6)]
    for rate in rates:
        params, state = step(params, state)
        used = float(gx.get_hyperparams(state)["learning_rate"])
        assert used == pytest.approx(max(rate, 0.0), abs=1e-8)
    expected = -sum(max(r, 0.0) for r in rates) * np.asarray([1.0, -2.0])
    np.testing.assert_allclose(params, expected, rtol=1e-6)
    clamped = sum(r < -1e-9 for r in rates)
    assert int(optax.tree_utils.tree_get(state, "learning_rate_clamped")) == clamped == 3
    assert step._cache_size() == 1


def test_a_decay_schedule_reaching_1_is_clamped_below_1():
    """b2 in [0, 1): a schedule reaching 1 is used as the largest float32 below 1."""
    tx = gx.adam(0.1, b2=S.linear_decay(0.999, 1.0, 1))
    state = tx.init(jnp.zeros(2))
    for _ in range(2):
        updates, state = tx.update(jnp.array([1.0, -1.0]), state)
    assert float(gx.get_hyperparams(state)["b2"]) == np.nextafter(np.float32(1), np.float32(0))
    assert np.all(np.isfinite(updates))
    assert int(optax.tree_utils.tree_get(state, "b2_clamped")) == 1


@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda: S.step_decay(0.1, 0.5, 0), "step_size"),
        (lambda: S.step_decay(0.1, 0.0, 10), "decay_factor"),
        (lambda: S.exponential_decay(0.1, -0.5), "decay_rate"),
        (lambda: S.exponential_decay(0.1, 0.5, -3), "transition_steps"),
        (lambda: S.exponential_decay(0.1, 0.5, transition_begin=-1), "transition_begin"),
        (lambda: S.piecewise_constant(0.1, [10, 10], [0.5, 0.5]), "boundaries"),
        (lambda: S.piecewise_constant(0.1, [10, 5], [0.5, 0.5]), "boundaries"),
        (lambda: S.piecewise_constant(0.1, [10], [0.5, 0.5]), "scales"),
        (lambda: S.inverse_time_decay(0.1, -1.0), "k"),
        (lambda: S.cosine_decay(0.1, 0), "decay_steps"),
        (lambda: S.cosine_decay(0.1, 10, alpha=1.5), "alpha"),
        (lambda: S.cosine_decay(0.1, 10, warm_restarts=True, period_mult=0), "period_mult"),
        (lambda: S.polynomial_decay(0.1, 0.0, 0.0, 10), "power"),
        (lambda: S.warmup(0.1, 0), "warmup_steps"),
        (lambda: S.warmup(0.1, 10, shape="cubic"), "shape"),
        (lambda: S.inverse_sqrt_decay(0.1, -5), "warmup_steps"),
        (lambda: S.join([S.constant(1.0), S.constant(2.0)], [5, 6]), "boundaries"),
        (lambda: S.constant(float("inf")), "value"),
        (lambda: S.one_cycle(0, 0.1), "total_steps"),
        (lambda: S.one_cycle(100, 0.1, pct_start=1.0), "pct_start"),
        (lambda: S.one_cycle(3, 0.1), "pct_start"),  # the first phase would last 0 steps
        (lambda: S.one_cycle_momentum(100, pct_start=0.6, three_phase=True), "pct_start"),
        (lambda: S.one_cycle(100, 0.1, anneal_strategy="cosine"), "anneal_strategy"),
        (lambda: S.one_cycle(100, 0.1, div_factor=0.0), "div_factor"),
        (lambda: S.one_cycle(100, 0.1, final_div_factor=-1.0), "final_div_factor"),
        (lambda: S.cyclic(0.1, 1.0, 0), "step_size_up"),
        (lambda: S.cyclic(0.1, 1.0, 10, 0), "step_size_down"),
        (lambda: S.cyclic(0.1, 1.0, 10, mode="sine"), "mode"),
        (lambda: S.cyclic(0.1, 1.0, 10, mode="exp_range", gamma=0.0), "gamma"),
        (lambda: S.cyclic(0.1, 1.0, 10, scale_mode="epochs"), "scale_mode"),
        (lambda: S.warmup_cosine(0.1, 100, 100), "decay_steps"),
        (lambda: S.warmup_cosine(0.1, -1, 100), "warmup_steps"),
        (lambda: S.warmup_cosine(0.1, 10, 100, exponent=0.0), "exponent"),
    ],
)
def test_invalid_arguments_raise_naming_them(build, argument):
    with pytest.raises(ValueError, match=rf"^{argument}"):
        build()


def test_exponential_needs_exactly_one_form():
    with pytest.raises(ValueError, match="exactly one of decay_rate and k"):
        S.exponential_decay(0.1)
    with pytest.raises(ValueError, match="exactly one of decay_rate and k"):
        S.exponential_decay(0.1, 0.5, k=0.1)


def test_evaluate_tabulates():
    np.testing.assert_allclose(
        S.evaluate(S.step_decay(1.0, 0.5, 2), 5, start=1), [1, 0.5, 0.5, 0.25, 0.25]
    )


def test_float64_while_x64_is_on():
    with jax.enable_x64(True):
        value = S.exponential_decay(0.1, 0.99)(300)
        assert value.dtype == jnp.float64
        np.testing.assert_allclose(float(value), 0.1 * 0.99**300, rtol=1e-14)
