"""Every gradxform optimizer with an optax counterpart equals it over 200 steps.

optax is the oracle here only: gradxform computes nothing through it.

Tolerance: float32 1e-6 and float64 1e-12, relative to each leaf's largest
magnitude (a plain elementwise rtol is meaningless where a coordinate passes
through zero). Most rows are bitwise equal and are asserted so; the RMS-based
rows (AdaGrad, RMSProp) compute ``g / sqrt(v + eps)`` where optax computes
``g * rsqrt(v + eps)``, which differs in the last bit.
"""

import functools

import numpy as np
import optax
import pytest

import gradxform as gx
from tests.trajectories import trajectories

RTOL = {"float32": 1e-6, "float64": 1e-12}
NOT_BITWISE = {"adagrad", "rmsprop", "rmsprop_centered_momentum", "rmsprop_eps_outside"}

# name -> (gradxform transform, optax transform)
ROWS = {
    "sgd": (lambda: gx.sgd(0.05), lambda: optax.sgd(0.05)),
    "sgd_momentum": (lambda: gx.sgd(0.05, 0.9), lambda: optax.sgd(0.05, 0.9)),
    "sgd_nesterov": (
        lambda: gx.sgd(0.05, 0.9, nesterov=True),
        lambda: optax.sgd(0.05, 0.9, nesterov=True),
    ),
    "adagrad": (lambda: gx.adagrad(0.1), lambda: optax.adagrad(0.1)),
    "rmsprop": (lambda: gx.rmsprop(0.01), lambda: optax.rmsprop(0.01)),
    "rmsprop_centered_momentum": (
        lambda: gx.rmsprop(0.01, centered=True, momentum=0.9),
        lambda: optax.rmsprop(0.01, centered=True, momentum=0.9),
    ),
    "rmsprop_eps_outside": (
        lambda: gx.rmsprop(0.01, eps_in_sqrt=False, initial_scale=0.1),
        lambda: optax.rmsprop(0.01, eps_in_sqrt=False, initial_scale=0.1),
    ),
    "adam": (lambda: gx.adam(0.01), lambda: optax.adam(0.01)),
    "adam_eps_root": (
        lambda: gx.adam(0.01, 0.8, 0.99, 1e-6, eps_root=1e-8),
        lambda: optax.adam(0.01, 0.8, 0.99, 1e-6, eps_root=1e-8),
    ),
    "adamw": (
        lambda: gx.adamw(0.01, weight_decay=0.1),
        lambda: optax.adamw(0.01, weight_decay=0.1),
    ),
    "adamw_masked": (
        lambda: gx.adamw(0.01, weight_decay=0.1, mask=lambda p: {k: p[k].ndim == 2 for k in p}),
        lambda: optax.adamw(0.01, weight_decay=0.1, mask=lambda p: {k: p[k].ndim == 2 for k in p}),
    ),
    "amsgrad": (lambda: gx.amsgrad(0.01), lambda: optax.amsgrad(0.01)),
    "nadam": (lambda: gx.nadam(0.01), lambda: optax.nadam(0.01)),
    "adam_scheduled_lr": (
        lambda: gx.adam(lambda t: 0.01 / (1.0 + 0.05 * t)),
        lambda: optax.adam(lambda t: 0.01 / (1.0 + 0.05 * t)),
    ),
    "clip_then_sgd": (
        lambda: gx.chain(gx.clip_by_global_norm(1.0), gx.clip(0.2), gx.sgd(0.05, 0.9)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.clip(0.2), optax.sgd(0.05, 0.9)),
    ),
}


@functools.cache
def _rows(dtype):
    """Every row's two trajectories on the shared problem, one compiled program per dtype
    (tests/trajectories.py)."""
    table = {}
    for name, (make_gx, make_optax) in ROWS.items():
        table[name, "gx"] = (make_gx(), gx.apply_updates)
        table[name, "optax"] = (make_optax(), optax.apply_updates)
    return trajectories(table, dtype)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_equals_optax_over_200_steps(name, dtype):
    runs = _rows(dtype)
    ours, theirs = runs[name, "gx"], runs[name, "optax"]
    for leaf in ours:
        assert ours[leaf].dtype == np.dtype(dtype)
        scale = np.max(np.abs(theirs[leaf]))
        np.testing.assert_allclose(
            ours[leaf], theirs[leaf], rtol=RTOL[dtype], atol=RTOL[dtype] * scale, err_msg=leaf
        )
        if name not in NOT_BITWISE:
            np.testing.assert_array_equal(ours[leaf], theirs[leaf], err_msg=f"{leaf} not bitwise")
