"""gx.grouped on an 8-device CPU mesh (issue #16).

The device count is fixed when jax starts, so the optimizers run in a fresh
interpreter (tests/scripts/grouped_sharded_run.py) and this module checks its
report: leaves are packed per device into buffers sharded over the mesh axes
of their group's partition spec, the compiled step has no collective, params
and the per-parameter view of the state keep the params' shardings, and five
grouped steps equal the same steps ungrouped (sharded, and on one device).
"""

import pytest

from tests.helpers import ALIASES, sharded_report

pytestmark = pytest.mark.slow  # a fresh interpreter with 8 CPU devices compiles each optimizer

# XLA:CPU contracts these rows' multiply-adds differently by position in a buffer
# (tests/test_grouped.py; as between shards, tests/test_sharding.py)
CONTRACTED = {"sgd_momentum", "rmsprop"}


@pytest.fixture(scope="module")
def report():
    return sharded_report("tests.scripts.grouped_sharded_run:report")["optimizers"]


def test_every_elementwise_optimizer_ran(report):
    assert set(report) == set(ALIASES)


def test_buffers_are_sharded_per_group(report):
    for name, row in report.items():
        if name == "sgd":  # plain SGD keeps no per-parameter state
            continue
        # w1 and w2 over both axes, b1 and v over "data", scale (and odd) replicated
        assert {"P(('data', 'model'),)", "P('data',)", "P()"} <= set(row["buffers"]), name


def test_compiled_step_has_no_collective(report):
    for name, row in report.items():
        assert row["collectives"] == [], (name, row["collectives"])


def test_params_and_state_keep_their_shardings(report):
    for name, row in report.items():
        assert row["params_keep_sharding"], name
        assert row["state_view_keeps_sharding"], name
        assert row["param_shaped_state_trees"] > 0 or name == "sgd", name


def test_grouped_steps_equal_ungrouped(report):
    for name, row in report.items():
        if name in CONTRACTED:
            assert row["ulps_from_ungrouped_sharded"] <= 4, (name, row)
            assert row["ulps_from_single_device"] <= 4, (name, row)
        else:
            assert row["equal_to_ungrouped_sharded"], name
            assert row["equal_to_ungrouped_single_device"], name
