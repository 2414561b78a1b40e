"""L-BFGS on an 8-device CPU mesh with explicit sharding (issue #14, item 8).

The device count is fixed when jax starts, so the run happens in a fresh
interpreter (tests/scripts/sharded_lbfgs_run.py) and this module checks its
report. Under ``AxisType.Explicit`` a concatenation of differently sharded
leaves is an error, so the run fails if the transform flattens the params
(``ravel_pytree``); the oracle is the same steps on one device.
"""

import pytest

from tests.helpers import sharded_report


@pytest.fixture(scope="module")
def report():
    return sharded_report("tests.scripts.sharded_lbfgs_run:report")


@pytest.mark.slow
def test_lbfgs_runs_under_explicit_sharding_and_keeps_the_shardings(report):
    assert report["ran"] and report["loss_decreased"]
    assert report["params_keep_sharding"]
    assert report["memory_sharded_like_params"]  # a leading memory axis, the rest as the leaf


@pytest.mark.slow
def test_sharded_lbfgs_steps_equal_single_device(report):
    assert report["max_abs_diff"] <= 1e-6
