"""The package type-checks: mypy, configured in pyproject.toml, is clean on gradxform/.

The configuration is honest rather than strict: unannotated function bodies are
not checked (``check_untyped_defs = false``), but every annotation is, and no
module of gradxform/ is excluded. py.typed ships with the package so that users'
type checkers read these annotations.
"""

import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).parents[1]


def test_py_typed_marker_ships_with_the_package():
    assert (ROOT / "gradxform" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["gradxform"]


@pytest.mark.slow
def test_mypy_is_clean_on_gradxform():
    done = subprocess.run(
        [sys.executable, "-m", "mypy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
