"""benchmarks/update_step.py runs end to end on tiny trees and reports every optimizer."""

import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import optax
import pytest

import gradxform as gx
import gradxform.optimizers

SCRIPT = pathlib.Path(__file__).parents[1] / "benchmarks" / "update_step.py"
JAX_IMPLS = ["gradxform", "optax"] + ["grouped"] * hasattr(gx, "grouped")


def run(out: pathlib.Path, *flags: str) -> dict:
    command = [sys.executable, str(SCRIPT), "--quick", "--no-torch", "--out", str(out), *flags]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return json.loads((out / "update_step_cpu.json").read_text())


def positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow  # a compile per optimizer and implementation (~10 s)
def test_every_optimizer_gradxform_and_optax_share_gets_a_row(tmp_path):
    report = run(tmp_path, "--in-process", "--trees", "1leaf")
    rows = {r["optimizer"]: r for r in report["rows"]}
    shared = {n for n in gradxform.optimizers.__all__ if hasattr(optax, n)}
    assert shared and shared <= set(rows), shared - set(rows)
    specs = load_script().OPTIMIZERS
    for name, row in rows.items():
        spec = specs[name]  # optax may lack it (soap); grouped runs elementwise ones only
        impls = [i for i in JAX_IMPLS if i != "optax" or spec.optax is not None]
        for impl in [i for i in impls if i != "grouped" or spec.elementwise]:
            assert positive(row[f"{impl}_ms"]), (name, impl, row)
            assert positive(row[f"{impl}_first_call_s"]), (name, impl, row)
            assert row[f"{impl}_peak_mb"] is None  # not measured in one process
    assert report["bars"] and "Step time" in (tmp_path / "update_step_cpu.md").read_text()


@pytest.mark.slow  # a worker process per implementation, tree and layout (~15 s)
def test_workers_measure_first_call_memory_and_steps(tmp_path):
    report = run(tmp_path, "--trees", "1leaf", "10000", "--optimizers", "sgd", "--layouts", "2")
    steps, first_only = report["rows"]
    assert (steps["tree"], first_only["tree"]) == ("1leaf", "10000")
    for impl in JAX_IMPLS:
        assert positive(steps[f"{impl}_ms"])
        # two memory layouts, each a fresh set of workers; the field is their median
        layouts = steps[f"{impl}_ms_layouts"]
        assert len(layouts) == 2 and steps[f"{impl}_ms"] == pytest.approx(sum(layouts) / 2)
        for row in (steps, first_only):
            assert positive(row[f"{impl}_first_call_s"]) and positive(row[f"{impl}_peak_mb"])
        assert f"{impl}_ms" not in first_only  # the 10,000-leaf tree: first call only


def load_script():
    """benchmarks/update_step.py as a module."""
    spec = importlib.util.spec_from_file_location("update_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_trees_are_the_issue_sizes():
    module = load_script()
    args = module.parse(["--device", "gpu"])
    assert args.in_process and args.optimizers == ["adam"]
    sizes = {k: sum(math.prod(s) for s in t.shapes) for k, t in module.trees("gpu", False).items()}
    leaves = {k: len(t.shapes) for k, t in module.trees("gpu", False).items()}
    assert set(args.trees) == set(sizes)
    assert sizes == {"1leaf": 10**8, "gpt2": 124_439_808, "1000": 10**8, "10000": 10**8}
    assert leaves == {"1leaf": 1, "gpt2": 148, "1000": 1000, "10000": 10_000}
