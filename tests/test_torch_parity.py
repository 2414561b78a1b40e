"""gradxform.torch_compat presets reproduce torch.optim over 200 steps.

The reference trajectories were recorded by ``tests/reference/record_torch.py``
(the torch version is stored in the file), so CI needs no torch. When torch is
importable the same comparison also runs live.
"""

import functools
import pathlib

import numpy as np
import pytest

import gradxform as gx
from tests.helpers import trajectory
from tests.reference.torch_configs import TORCH_CONFIGS
from tests.trajectories import trajectories

RECORDED = np.load(pathlib.Path(__file__).parent / "reference" / "torch_trajectories.npz")
# Bounds relative to each leaf's largest magnitude. torch rounds differently (lerp,
# sqrt(v)/sqrt(bc2), p*(1-lr*wd)), and computes Adam's bias corrections 1 - beta**t in
# float64 from the decimal beta, where gradxform (like optax) raises the float32 beta:
# in float32 that alone moves Adam's iterates by ~7e-6 of their scale over 200 steps.
RTOL = {"float32": 2e-5, "float64": 1e-12}


def _compare(ours, theirs, dtype, context):
    for leaf, values in ours.items():
        scale = np.max(np.abs(theirs[leaf]))
        np.testing.assert_allclose(
            values, theirs[leaf], rtol=RTOL[dtype], atol=RTOL[dtype] * scale, err_msg=context + leaf
        )


@functools.cache
def _recorded_rows(dtype):
    """Every config's trajectory, one compiled program per dtype (tests/trajectories.py)."""
    table = {
        name: (getattr(gx.torch_compat, preset)(**kwargs), None)
        for name, (_, preset, kwargs) in TORCH_CONFIGS.items()
    }
    return trajectories(table, dtype)


@pytest.mark.parametrize("name", sorted(TORCH_CONFIGS))
def test_equals_recorded_torch(name, dtype):
    ours = _recorded_rows(dtype)[name]
    theirs = {leaf: RECORDED[f"{name}/{dtype}/{leaf}"] for leaf in ours}
    _compare(ours, theirs, dtype, f"{name} vs torch {RECORDED['torch_version']}: ")


@pytest.mark.parametrize("name", ["sgd_dampening_l2", "rmsprop_centered_momentum_l2", "amsgrad"])
def test_equals_live_torch(name):
    pytest.importorskip("torch")
    from tests.reference.record_torch import torch_trajectory

    torch_class, preset, kwargs = TORCH_CONFIGS[name]
    theirs = torch_trajectory(torch_class, kwargs, "float32")
    ours = trajectory(getattr(gx.torch_compat, preset)(**kwargs), "float32")
    _compare(ours, theirs, "float32", f"{name} vs live torch: ")
