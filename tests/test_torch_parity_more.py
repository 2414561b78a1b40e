"""Adadelta, Rprop, RAdam, Adamax and torch's NAdam against recorded torch.optim runs.

tests/reference/record_torch_more.py ran torch.optim (the version is in the file)
for 200 steps on the shared problem (tests/problems.py, seed 3, a mixed tree with a
batched 3-D leaf) in float32 and float64; each row runs the gradxform optimizer on the
same problem (its own gradients, from its own params) and compares the params after
every 20th step. CI needs no torch; with torch importable, one test also runs live.

Rprop is bitwise equal to torch in both dtypes: the same step-size products, clipped
the same way, and a step that adds or subtracts the step size exactly. The other rows
agree to rounding, bounded relative to each leaf's largest magnitude (BOUND says why
each bound is what it is).
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import gradxform as gx
from tests.helpers import trajectory
from tests.reference.record_torch_more import CONFIGS, EVERY, SEED, SHAPES, STEPS

RECORDED = np.load(pathlib.Path(__file__).parent / "reference" / "torch_more.npz")

# config name (tests/reference/record_torch_more.py) -> the gradxform optimizer
GRADXFORM = {
    "adadelta": lambda: gx.adadelta(1.0),
    "adadelta_l2": lambda: gx.adadelta(0.5, 0.8, 1e-4, 0.01),
    "rprop": lambda: gx.rprop(0.01),
    "rprop_bounds": lambda: gx.rprop(0.05, 0.3, 1.5, 1e-3, 0.2),
    "radam": lambda: gx.radam(0.01),
    "radam_eps0": lambda: gx.radam(0.01, 0.8, 0.99, 0.0),
    "adamax": lambda: gx.adamax(0.01),
    "adamax_betas": lambda: gx.adamax(0.02, 0.8, 0.99, 1e-3),
    "nadam": lambda: gx.nadam_momentum_decay(0.01),
    "nadam_l2": lambda: gx.nadam_momentum_decay(0.01, weight_decay=0.01, momentum_decay=0.01),
    "nadam_decoupled": lambda: gx.nadam_momentum_decay(
        0.01, weight_decay=0.1, decoupled_weight_decay=True
    ),
}

BITWISE = {"rprop", "rprop_bounds"}

# Bounds relative to each leaf's largest magnitude, and why (measured, torch 2.14.1):
# - default: float32 2e-6 and float64 1e-14. torch rounds its own way (lerp for the
#   first moment, lr / (1 - b1**t) folded into addcdiv, Adadelta's in-place sqrt),
#   and takes scalar coefficients in Python double; measured at most 5.5e-7 (Adamax)
#   and 2.6e-7 (Adadelta) in float32, 3.9e-16 in float64.
# - NAdam in float32: torch computes mu_t = b1 (1 - 0.5 * 0.96**(t psi)) and the
#   step coefficients in Python double (its product of mu_t in float32), gradxform in
#   float32 (the store's dtype): measured 7.3e-6, bound 2e-5. float64 1.6e-15.
# - RAdam at its defaults: in float32, rho_t = rho_inf - 2 t b2**t / (1 - b2**t) cancels
#   (1999 - 1993 at t = 6): gradxform (as optax) gets rho_6 = 6.0005 in float32, torch
#   5.9942 in double, so the first rectified step differs by 0.1%: measured 1.2e-4,
#   bound 3e-4. In float64, torch adds eps to sqrt(v) before the bias correction
#   (eps / sqrt(1 - b2**t) in gradxform's terms): measured 1.2e-8, bound 5e-8. With
#   b2 = 0.99 (less cancellation) and eps = 0, radam_eps0: 2.1e-6 and 2.1e-16.
RTOL = {"float32": 2e-6, "float64": 1e-14}
BOUND = {
    ("nadam", "float32"): 2e-5,
    ("nadam_l2", "float32"): 2e-5,
    ("nadam_decoupled", "float32"): 2e-5,
    ("radam", "float32"): 3e-4,
    ("radam", "float64"): 5e-8,
    ("radam_eps0", "float32"): 5e-6,
}


def _ours(name: str, dtype: str) -> dict:
    run = trajectory(GRADXFORM[name](), dtype, STEPS, EVERY, seed=SEED, shapes=SHAPES)
    return {leaf: np.asarray(values) for leaf, values in run.items()}


def _compare(name: str, dtype: str, ours: dict, theirs: dict, context: str) -> None:
    bound = BOUND.get((name, dtype), RTOL[dtype])
    for leaf in SHAPES:
        assert ours[leaf].dtype == theirs[leaf].dtype == np.dtype(dtype)
        assert ours[leaf].shape == (STEPS // EVERY, *SHAPES[leaf])
        if name in BITWISE:
            np.testing.assert_array_equal(ours[leaf], theirs[leaf], err_msg=context + leaf)
        scale = np.max(np.abs(theirs[leaf]))
        np.testing.assert_allclose(
            ours[leaf], theirs[leaf], rtol=bound, atol=bound * scale, err_msg=context + leaf
        )


def test_every_recorded_config_has_a_row():
    assert set(GRADXFORM) == set(CONFIGS)
    assert all(f"{name}/float32/w" in RECORDED for name in CONFIGS)


@pytest.mark.parametrize("name", sorted(GRADXFORM))
def test_equals_recorded_torch(name, dtype):
    ours = _ours(name, dtype)
    theirs = {leaf: RECORDED[f"{name}/{dtype}/{leaf}"] for leaf in SHAPES}
    # the runs moved away from the start: two optimizers that do nothing would agree
    assert all(np.any(theirs[leaf][0] != theirs[leaf][-1]) for leaf in SHAPES)
    _compare(name, dtype, ours, theirs, f"{name} vs torch {RECORDED['torch_version']}: ")


def test_rprop_lagged_is_not_torch():
    """optax's one-step-late Rprop (lagged=True) is far from torch's: the option matters."""
    ours = trajectory(
        gx.rprop(0.01, lagged=True), "float32", STEPS, EVERY, seed=SEED, shapes=SHAPES
    )
    theirs = RECORDED["rprop/float32/w"]
    assert np.max(np.abs(np.asarray(ours["w"]) - theirs)) > 1e-3


@pytest.mark.parametrize("name", ["rprop_bounds", "nadam_decoupled"])
def test_equals_live_torch(name):
    pytest.importorskip("torch")
    from tests.reference.record_torch_more import torch_trajectory

    torch_class, kwargs = CONFIGS[name]
    theirs = torch_trajectory(torch_class, kwargs, "float32")
    _compare(name, "float32", _ours(name, "float32"), theirs, f"{name} vs live torch: ")
