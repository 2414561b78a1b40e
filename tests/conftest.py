"""Shared fixtures and the hypothesis profiles.

Hypothesis runs the ``ci`` profile when the ``CI`` environment variable is set
(CI sets ``CI=true``): the same examples on every run (``derandomize``), no
per-example deadline (the first example of a test pays for its compilation), and
a failure prints the blob that reproduces it with ``@reproduce_failure``.
Elsewhere the ``dev`` profile draws fresh examples each run. Either can be chosen
with ``HYPOTHESIS_PROFILE=ci|dev``. Example counts stay in the tests' own
``@settings`` (small: every new shape is a new compilation).
"""

import collections
import os
import pathlib
import shutil
import tempfile

import jax
import pytest
from hypothesis import settings

from tests import helpers

settings.register_profile("dev", deadline=None, print_blob=True)
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts): a run of one test file stays in this process.

    Starting workers costs a few seconds of imports; it pays only across several files.
    Returning None leaves the choice (one worker per core) to pytest-xdist.
    """
    files = {str(arg).split("::")[0] for arg in config.args}
    if len(files) == 1 and next(iter(files)).endswith(".py"):
        return 0
    return None


# Docstring examples (collected from gradxform/ by --doctest-modules) that run a solver
# or a Lanczos loop for several seconds; a decorator cannot reach them, so they are
# marked here. Each still runs in the full suite and with `pytest <its module>`.
SLOW_DOCTESTS = {
    "gradxform.second_order.aliases.bfgs",
    "gradxform.second_order.aliases.lbfgs",
    "gradxform.second_order.aliases.newton",
    "gradxform.second_order.aliases.newton_cg",
    "gradxform.hessian.extreme.eigenpairs",
}


# The files that take longest on one worker, longest first (measured: -n0 --durations).
# ``--dist loadfile`` hands a whole file to the next free worker, in the order of the
# collection; pytest-xdist's own order (most tests first) started these last, so that
# one worker ran mypy or the notebooks alone at the end. Started first, the many small
# files that follow fill in around them and both workers finish together.
HEAVY_FILES = (
    "test_hessian.py",
    "test_second_order.py",
    "test_demo.py",
    "test_docs.py",
    "test_notebooks.py",
    "test_second_order_robustness.py",
    "test_grouped.py",
    "test_typing.py",
    "test_second_order_parity.py",
    "test_examples.py",
    "test_update_step_benchmark.py",
    "test_frameworks.py",
)
# Files that only read the session's shared sharded run (tests/helpers.py's sharded_report,
# started when the session starts): last, so that the run is done when they ask for it.
LAST_FILES = ("test_sharding.py", "test_grouped_sharding.py", "test_second_order_sharding.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order below
        config.option.loadscopereorder = False
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller did the rest
        return
    # every sharded table the session's files name: one 8-device interpreter, started now
    # in the background (tests/helpers.py's sharded_report waits for its file)
    tables = helpers.sharded_tables(session_files(config)) if runs_whole_files(config) else []
    if tables:
        directory = pathlib.Path(tempfile.mkdtemp(prefix="gradxform-sharded-"))
        process = helpers.start_sharded_reports(tables, directory)
        config.stash[SESSION] = {"dir": directory, "sharded": process}
        os.environ[helpers.SHARDED_DIR] = str(directory)


def pytest_unconfigure(config):
    session = config.stash.get(SESSION, None)
    if session is None:
        return
    process = session["sharded"]
    if process.poll() is None:  # the session ended early
        process.kill()
    process.wait()
    shutil.rmtree(session["dir"], ignore_errors=True)


SESSION = pytest.StashKey[dict]()


def session_files(config) -> list[pathlib.Path]:
    """The files and folders this session collects from (its arguments or testpaths)."""
    return [config.invocation_params.dir / arg for arg in config.args]


def runs_whole_files(config) -> bool:
    """Whether the session runs its files whole (no test ids, -k, -m, --lf), so that the
    sharded tables its files name are worth starting before collection."""
    option = config.option
    selective = option.keyword or option.markexpr or getattr(option, "lf", False)
    return not selective and not option.collectonly and all("::" not in a for a in config.args)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name in SLOW_DOCTESTS:
            item.add_marker(pytest.mark.slow)
    # heavy files first, then the others by number of tests (pytest-xdist's own order), then
    # the last files; a file's tests stay together and in their order (the sort is stable)
    rank = {name: i for i, name in enumerate(HEAVY_FILES)}
    rank.update({name: len(HEAVY_FILES) + 1 + i for i, name in enumerate(LAST_FILES)})
    counts = collections.Counter(item.nodeid.split("::")[0] for item in items)

    def order(item):
        path = item.nodeid.split("::")[0]
        return rank.get(path.rsplit("/", 1)[-1], len(HEAVY_FILES)), -counts[path]

    items.sort(key=order)


@pytest.fixture(params=["float32", pytest.param("float64", marks=pytest.mark.slow)])
def dtype(request):
    """Runs a test in float32, and in float64 with x64 enabled for that test only.

    The float64 rows are marked slow: the fast loop (``-m "not slow"``) runs float32.
    """
    if request.param == "float64":
        with jax.enable_x64(True):
            yield "float64"
    else:
        yield "float32"


@pytest.fixture
def x64():
    """Runs a test with x64 enabled (float64 by default), for that test only."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True, scope="module")
def x64_stays_off():
    """Fails a test module that leaves ``jax_enable_x64`` switched on globally (a module-level
    ``jax.config.update``, e.g. in an imported benchmark): a worker runs many files, and every
    file after it would silently run in float64. Tests use the ``x64`` fixture instead."""
    yield
    if jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", False)
        pytest.fail("this module left jax_enable_x64 on for every test after it")
