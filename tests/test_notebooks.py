"""Every notebook in notebooks/ runs top to bottom in a fresh Jupyter kernel (nbclient).

The notebooks assert their own key numbers (classifications, eigenvalues against the
dense Hessian, schedules against closed forms, ...), so an error in any cell fails
here. They are committed with their outputs, so that they render on a code host.
"""

import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow  # a Jupyter kernel per notebook, each training or solving something
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on failure


def test_the_four_notebooks_exist_with_outputs():
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "01_optimizers_2d",
        "02_schedules",
        "03_hessian_eigenvalues",
        "04_second_order",
    ]
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code and all(c.get("execution_count") for c in code), path.name
        images = sum("image/png" in o.get("data", {}) for c in code for o in c["outputs"])
        assert images >= 1, path.name
