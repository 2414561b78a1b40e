"""Every notebook in notebooks/ runs top to bottom (code cells executed in order)."""

import json
import pathlib

import jax
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    cells = json.loads(path.read_text())["cells"]
    namespace = {"__name__": "__main__"}
    x64 = jax.config.jax_enable_x64  # a notebook may switch it on for its own session
    try:
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), f"{path.name}[cell {i}]", "exec"), namespace)
    finally:
        jax.config.update("jax_enable_x64", x64)


def test_there_are_notebooks():
    assert NOTEBOOKS
