"""Adafactor: scale_by_factored_rms and its chains against optax, torch and NumPy.

* ``gx.adafactor`` against ``optax.adafactor`` (0.2.8), same arguments, over 200
  steps (one jitted ``lax.scan``) of the shared problem on a tree with a matrix, a
  batched 3-D leaf, a 3-D leaf whose two longest axes are not the last two, a
  vector and a scalar, float32 and float64: **bitwise**. The expressions are
  optax's in optax's order; optax flips the sign last (``scale(-1)``) and gradxform
  with the learning rate, and subtracts the weight decay after it: negation is
  exact, so the bits are the same. Momentum rows use ``0.9``: with a dyadic
  momentum such as 0.5 XLA simplifies optax's Python-constant EMA differently
  (measured 1.2e-7 after 200 float32 steps: one ulp of an O(1) parameter), and
  ``dtype_momentum=None`` in float64 (optax returns its float64 EMA before storing
  it as float32; gradxform's EMA rounds into its float32 moment first: measured
  6.1e-8 of the leaf's scale after 200 steps at the default float32 momentum).
* ``scale_by_factored_rms`` against the update written here in NumPy (float64,
  both axis rules, both eps modes).
* ``gx.adafactor_torch`` against torch.optim.Adafactor (2.14) recorded in
  tests/reference/torch_adafactor.npz by tests/reference/record_torch_adafactor.py:
  the recorded gradients are replayed and each step compared, within float
  rounding: torch takes ``t**-0.8`` and the relative step in Python double, RMS
  as ``norm / sqrt(n)``, the weight decay as ``x * (1 - lr * wd)`` and the
  EMA as ``lerp``, gradxform the same quantities in the parameters' dtype in
  another order (per step, measured 1.2e-7 at torch's defaults and 1.0e-6 with lr 0.3
  and steps up to 0.75 in float32, 4.4e-16 in float64).
* The state of a factored ``(m, n)`` leaf is ``m + n`` numbers (closed form).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    DTYPES,
    TOLERANCE,
    assert_checkpoint_resume_is_bitwise,
    assert_sharded_report,
    problem,
    replay_recorded_gradients,
    sharded_report,
)
from tests.helpers import trajectory as shared_trajectory

STEPS, EVERY = 200, 20
SHAPES = {"w": (4, 3), "b": (5,), "batched": (2, 3, 4), "k": (6, 2, 3), "s": ()}
REFERENCE = pathlib.Path(__file__).parent / "reference" / "torch_adafactor.npz"


def _decay_matrices(p):
    return jax.tree.map(lambda x: x.ndim >= 2, p)


# name -> keyword arguments given to both gx.adafactor and optax.adafactor
ROWS = {
    "defaults": {"learning_rate": 0.01},  # min_dim_size_to_factor 128: nothing factored here
    "factored": {"learning_rate": 0.01, "min_dim_size_to_factor": 2},
    "momentum_decay_mask": {
        "learning_rate": 0.02,
        "min_dim_size_to_factor": 3,
        "decay_rate": 0.6,
        "eps": 1e-20,
        "momentum": 0.9,
        "dtype_momentum": None,
        "weight_decay_rate": 1e-3,
        "weight_decay_mask": _decay_matrices,
    },
    "bare_unfactored": {
        "min_dim_size_to_factor": 2,
        "factored": False,
        "clipping_threshold": None,
        "multiply_by_parameter_scale": False,
        "learning_rate": 0.003,
        "weight_decay_rate": 1e-2,
    },
}


def _trajectory(tx, dtype, apply):
    run = shared_trajectory(tx, dtype, STEPS, EVERY, apply, seed=3, shapes=SHAPES)
    return jax.tree.map(np.asarray, run)


# the rows the fast loop runs (each row compiles two 200-step scans); the others are slow
FAST_ROWS = {"factored", "momentum_decay_mask"}


@pytest.mark.parametrize(
    "name", [n if n in FAST_ROWS else pytest.param(n, marks=pytest.mark.slow) for n in sorted(ROWS)]
)
def test_equals_optax_adafactor_bitwise_over_200_steps(name, dtype):
    ours = _trajectory(gx.adafactor(**ROWS[name]), dtype, gx.apply_updates)
    theirs = _trajectory(optax.adafactor(**ROWS[name]), dtype, optax.apply_updates)
    start, _ = problem(dtype, 3, STEPS, SHAPES)
    for leaf in SHAPES:
        assert ours[leaf].dtype == np.dtype(dtype)
        assert np.all(ours[leaf][-1] != np.asarray(start[leaf]))  # it moved
        np.testing.assert_array_equal(ours[leaf], theirs[leaf], err_msg=f"{name}: {leaf}")


def _numpy_factored(gs, axes, eps, clamp, c=0.8):
    """The factored update of one leaf over steps, float64 NumPy, written from the paper;
    optax's decay (the ``"add"`` mode) is computed in float32 as optax does."""
    row, col = axes
    r = c_ = None
    out = []
    for t, g in enumerate(gs, start=1):
        if clamp:
            w = t**-c
        else:
            beta = np.float32(1) - np.float32(t) ** np.float32(-c)
            w = float(np.float32(1) - beta)
        sq = g * g if clamp else g * g + eps
        r_new, c_new = sq.mean(axis=col, keepdims=True), sq.mean(axis=row, keepdims=True)
        r = r_new if r is None else (1 - w) * r + w * r_new
        c_ = c_new if c_ is None else (1 - w) * c_ + w * c_new
        mean_r = r.mean(axis=row, keepdims=True)
        if clamp:
            v = np.maximum(r * c_ / np.maximum(mean_r, eps), eps * eps)
        else:
            v = r * c_ / mean_r
        out.append(g / np.sqrt(v))
    return out


@pytest.mark.parametrize("axes, eps_mode, eps", [("largest", "add", 1e-3), ("last", "clamp", 0.5)])
def test_factored_update_against_numpy(axes, eps_mode, eps):
    rng = np.random.default_rng(5)
    gs = [rng.standard_normal((6, 2, 3)) for _ in range(3)]
    with jax.enable_x64(True):
        tx = gx.scale_by_factored_rms(
            0.8, eps, min_dim_size_to_factor=2, axes=axes, eps_mode=eps_mode
        )
        state = tx.init(jnp.zeros((6, 2, 3)))
        dims = gx.factored_axes((6, 2, 3), 2, axes)
        want = _numpy_factored(gs, dims, eps, eps_mode == "clamp")
        update = jax.jit(tx.update)
        for g, w in zip(gs, want):
            u, state = update(jnp.asarray(g), state)
            np.testing.assert_allclose(np.asarray(u), w, rtol=1e-12)
    assert dims == {"largest": (2, 0), "last": (1, 2)}[axes]
    # the state: one number per row (v_row) and per column (v_col), the batch axis kept
    shapes = {"largest": ((2, 3), (6, 2)), "last": ((6, 2), (6, 3))}[axes]
    assert state.v is None and (state.v_row.shape, state.v_col.shape) == shapes


def test_decay_offset_starts_the_schedule_later():
    """t = count - offset (optax's), and 1 while that is < 1 (no memory: v = g^2 + eps,
    where optax's 0 ** -0.8 gives NaN)."""
    g = np.array([[2.0, -0.5], [-1.0, 4.0], [3.0, 1.0], [1.0, 2.0]])
    tx = gx.scale_by_factored_rms(decay_offset=2, eps=0.0)
    state = tx.init(jnp.zeros(2))
    outs = []
    for g_t in g:
        u, state = tx.update(jnp.asarray(g_t, jnp.float32), state)
        outs.append(np.asarray(u))
    for t in range(3):  # counts 1, 2, 3: t = 1
        np.testing.assert_array_equal(outs[t], np.sign(g[t]))
    beta = 1 - 2.0**-0.8  # count 4: t = 2
    v = beta * g[2] ** 2 + (1 - beta) * g[3] ** 2
    np.testing.assert_allclose(outs[3], g[3] / np.sqrt(v), rtol=1e-6)


def test_factored_axes_rules():
    assert gx.factored_axes((4, 3), 3) == (1, 0)  # col = the longest axis
    assert gx.factored_axes((3, 3), 3) == (0, 1)  # ties: the later axis is the longest
    assert gx.factored_axes((4, 2), 3) is None  # the shorter axis is too short
    assert gx.factored_axes((7,), 1) is None and gx.factored_axes((), 1) is None
    assert gx.factored_axes((9, 2, 3), 2, "last") == (1, 2)


@pytest.fixture(scope="module")
def torch_record():
    return np.load(REFERENCE)


TORCH_CONFIGS = {  # the arguments tests/reference/record_torch_adafactor.py gave torch
    "default": {},
    "decayed": {
        "lr": 0.3,
        "beta2_decay": -0.5,
        "eps": (1e-2, 1e-2),
        "d": 1.0,
        "weight_decay": 0.1,
    },
    "float64": {"lr": 0.02, "weight_decay": 0.01},
}
TORCH_LEAVES = ("w", "batched", "b", "s")


def _replay(record, config, tx):
    """gradxform fed torch's recorded gradients from torch's initial params: per-step
    differences of the increments, and the increments' largest size."""
    return replay_recorded_gradients(tx, record, config, TORCH_LEAVES)


@pytest.mark.parametrize("config", sorted(TORCH_CONFIGS))
def test_adafactor_torch_matches_the_torch_recording(torch_record, config):
    """Each step within float rounding of torch's (module docstring): a few ulps of the
    params and of the step, ``4 eps (|x| + 4 |step|)``, measured at most 1.0e-6 with steps
    up to 0.75 (float32, lr 0.3), 1.2e-7 (float32, defaults), 4.4e-16 (float64)."""
    with jax.enable_x64(config == "float64"):
        steps = _replay(torch_record, config, gx.adafactor_torch(**TORCH_CONFIGS[config]))
        eps = np.finfo(np.dtype(config if config == "float64" else "float32")).eps
        for leaf, (diff, size) in steps.items():
            scale = np.abs(torch_record[f"{config}/{leaf}/params"]).max()
            bound = 4 * eps * (scale + 4 * size.max())
            assert diff.max() <= bound, (leaf, diff.max(), bound)
            assert size.max() > 1e3 * bound  # the steps are not all tiny


def test_where_the_torch_and_optax_recipes_meet_and_part(torch_record):
    """At torch's defaults (lr 0.01: the relative step min(0.01, 1/sqrt(t)) is 0.01 for
    10^4 steps, no weight decay) optax's recipe with learning_rate=0.01 and every matrix
    factored takes torch's steps to 2e-5 of a step (only eps differs: added to g^2 or a
    floor). With lr 0.3 (the cap 1/sqrt(t) binds from t = 12) and weight decay (times
    lr in torch, not in optax) they part by more than 5% of a step."""
    meet = _replay(torch_record, "default", gx.adafactor(0.01, min_dim_size_to_factor=1))
    assert max(d.max() / s.max() for d, s in meet.values()) < 2e-5
    kw = {"decay_rate": 0.5, "weight_decay_rate": 0.1, "min_dim_size_to_factor": 1}
    part = _replay(torch_record, "decayed", gx.adafactor(0.3, **kw))
    assert max(d.max() / s.max() for d, s in part.values()) > 0.05


def _state_floats(state) -> int:
    return sum(x.size for x in jax.tree.leaves(state))


def test_factored_state_of_a_matrix_is_m_plus_n_floats():
    m, n = 300, 200
    for shape, factored in [((m, n), True), ((n, m), True), ((m, 100), False)]:
        state = gx.scale_by_factored_rms(min_dim_size_to_factor=128).init(jnp.zeros(shape))
        moments = _state_floats((state.v_row, state.v_col, state.v))
        assert moments == (sum(shape) if factored else np.prod(shape)), shape
    # a batch of 5 (m, n) matrices: 5 (m + n)
    state = gx.scale_by_factored_rms(min_dim_size_to_factor=128).init(jnp.zeros((5, m, n)))
    assert _state_floats((state.v_row, state.v_col)) == 5 * (m + n)


def gpt_like_tree(vocab=96, d=256, layers=4, context=128):
    """The parameter shapes of a small character-level GPT (~3.2M parameters)."""
    tree = {"embed": (vocab, d), "pos": (context, d), "head": (d, vocab), "ln_f": (d,)}
    for i in range(layers):
        tree |= {
            f"h{i}/qkv": (d, 3 * d),
            f"h{i}/proj": (d, d),
            f"h{i}/fc": (d, 4 * d),
            f"h{i}/fc_bias": (4 * d,),
            f"h{i}/out": (4 * d, d),
            f"h{i}/ln1": (d,),
            f"h{i}/ln2": (d,),
        }
    return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in tree.items()}


def state_bytes_per_param(tx, params) -> float:
    state = jax.eval_shape(tx.init, params)
    size = lambda t: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(t))  # noqa: E731
    return size(state) / (size(params) / 4)


def test_state_bytes_per_parameter_on_a_gpt_like_tree():
    """Closed form: 4 bytes per second-moment number, m + n per factored matrix (both
    axes >= 128), the whole leaf otherwise; plus the store's scalars."""
    params = gpt_like_tree()
    n = sum(np.prod(p.shape) for p in params.values())
    moments = sum(
        sum(p.shape) if gx.factored_axes(p.shape, 128) else np.prod(p.shape)
        for p in params.values()
    )
    ours = state_bytes_per_param(gx.adafactor(1e-3), params)
    assert ours == pytest.approx(4 * moments / n, abs=100 / n)  # + a few scalars
    assert ours < 0.4  # the embedding (96 rows) and the head stay whole
    assert state_bytes_per_param(gx.adamw(1e-3), params) == pytest.approx(8.0, abs=1e-4)


def test_hyperparameters_live_in_the_state():
    tx = gx.adafactor(0.1, momentum=0.9, weight_decay_rate=0.01)
    params = {"w": jnp.ones((3, 2))}
    state = tx.init(params)
    names = sorted(gx.get_hyperparams(state))
    assert names == [
        "clipping_threshold",
        "decay_offset",
        "decay_rate",
        "eps",
        "learning_rate",
        "min_scale",  # optax's fixed 1e-3, settable here
        "momentum",
        "weight_decay_rate",
    ]
    update = jax.jit(tx.update)
    u, _ = update({"w": jnp.ones((3, 2))}, gx.set_hyperparams(state, learning_rate=0.0), params)
    # the decay alone, not multiplied by the learning rate (optax's order)
    np.testing.assert_array_equal(np.asarray(u["w"]), np.full((3, 2), np.float32(-0.01)))
    assert update._cache_size() == 1  # set, not rebuilt: one compile
    torch_names = sorted(gx.get_hyperparams(gx.adafactor_torch().init(params)))
    assert torch_names == [
        "clipping_threshold",
        "decay_offset",  # the block's own (torch has none), 0
        "decay_rate",
        "learning_rate",
        "min_scale",  # and no weight_decay: its default 0 leaves the decay block out
    ]


BAD = [
    (lambda: gx.adafactor(-0.1), "learning_rate"),
    (lambda: gx.adafactor(decay_rate=-0.8), "decay_rate"),
    (lambda: gx.adafactor(eps=-1e-30), "eps"),
    (lambda: gx.adafactor(weight_decay_rate=-1e-3), "weight_decay_rate"),
    (lambda: gx.adafactor(momentum=1.0), "momentum"),
    (lambda: gx.adafactor(clipping_threshold=0.0), "clipping_threshold"),
    (lambda: gx.adafactor(min_dim_size_to_factor=0), "min_dim_size_to_factor"),
    (lambda: gx.adafactor(decay_offset=-1), "decay_offset"),
    (lambda: gx.scale_by_factored_rms(axes="first"), "axes"),
    (lambda: gx.scale_by_factored_rms(eps=None), "eps"),
    (lambda: gx.adafactor_torch(beta2_decay=0.5), "beta2_decay"),
    (lambda: gx.adafactor_torch(eps=(None, -1.0)), r"eps\[1\]"),
    (lambda: gx.adafactor_torch(eps=(-1.0, 1e-3)), r"eps\[0\]"),
    (lambda: gx.adafactor_torch(weight_decay=-0.1), "weight_decay"),
    (lambda: gx.scale_by_param_block_rms(-1.0), "min_scale"),
    (lambda: gx.scale_by_relative_step(-1.0), "learning_rate"),
]


@pytest.mark.parametrize("index", range(len(BAD)))
def test_bad_input_raises_when_built(index):
    build, name = BAD[index]
    with pytest.raises(ValueError, match=f"{name} must be"):
        build()


def test_bad_types_raise_when_built():
    with pytest.raises(TypeError, match="min_dim_size_to_factor must be"):
        gx.adafactor(min_dim_size_to_factor=2.5)
    with pytest.raises(TypeError, match="eps must be"):
        gx.adafactor_torch(eps=1e-3)


def test_checkpoint_resume_is_bitwise(tmp_path):
    params, noise = problem("float32", 3, 12, SHAPES)
    tx = gx.adafactor(0.01, min_dim_size_to_factor=2, momentum=0.9, weight_decay_rate=1e-3)

    @jax.jit
    def step(p, s, n):
        g = jax.tree.map(lambda x, e: 0.5 * x + jnp.cos(x) + e, p, n)
        u, s = tx.update(g, s, p)
        return gx.apply_updates(p, u), s

    assert_checkpoint_resume_is_bitwise(step, tx.init(params), params, noise, tmp_path, 5, 12)


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != "complex64"])
def test_dtype_rows(dtype):
    """Updates and state keep the parameters' dtype; the steps stay within the
    dtype table's tolerance of the float64 steps."""
    rng = np.random.default_rng(8)
    x64 = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(5)}
    g64 = {k: rng.standard_normal(v.shape) for k, v in x64.items()}
    with jax.enable_x64(True):
        outs = {}
        for dt in (dtype, "float64"):
            tx = gx.adafactor(0.1, min_dim_size_to_factor=2)
            x = jax.tree.map(lambda a, dt=dt: jnp.asarray(a, dt), x64)
            state, update = tx.init(x), jax.jit(tx.update)
            for _ in range(3):
                u, state = update(jax.tree.map(lambda a, dt=dt: jnp.asarray(a, dt), g64), state, x)
            outs[dt] = u
            for leaf in jax.tree.leaves((u, state.inner_state[0].v_row["w"])):
                assert leaf.dtype == jnp.dtype(dtype if dt == dtype else "float64")
    for k in x64:
        np.testing.assert_allclose(
            np.asarray(outs[dtype][k], np.float64),
            np.asarray(outs["float64"][k]),
            atol=TOLERANCE[dtype] * 0.1,
        )


SHARDED = {
    # min_dim_size_to_factor 128: nothing is factored here, no collective
    "factored_rms_unfactored": lambda: gx.chain(gx.scale_by_factored_rms(), gx.scale(-0.01)),
    # w1 (64, 24), w2 (32, 8) factored over their sharded axis 0
    "factored_rms": lambda: gx.chain(
        gx.scale_by_factored_rms(min_dim_size_to_factor=8), gx.scale(-0.01)
    ),
    "adafactor": lambda: gx.adafactor(0.01),
}


@pytest.mark.slow
def test_sharded_runs_equal_one_device_and_need_the_documented_collectives():
    """FSDP on axis 0: the unfactored second moment is elementwise (no collective);
    the row means of a matrix sharded along its rows are an all-reduce, and so are
    the per-leaf RMS of the update (clipping) and of the parameter (scale)."""
    report = sharded_report("tests.test_adafactor:SHARDED")
    assert_sharded_report(
        {"factored_rms_unfactored": report.pop("factored_rms_unfactored")},
        ["factored_rms_unfactored"],
    )
    for name, row in report.items():
        assert row["collectives"] == ["all-reduce"], (name, row["collectives"])
        assert row["params_keep_sharding"] and row["state_keeps_sharding_after_steps"], name
        assert row["max_abs_diff"] <= 1e-6, (name, row["max_abs_diff"])
