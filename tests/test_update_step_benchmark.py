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


def load_gpt_script():
    """benchmarks/update_step_gpt.py as a module."""
    path = SCRIPT.parent / "update_step_gpt.py"
    spec = importlib.util.spec_from_file_location("update_step_gpt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # 21 optimizer pairs, one small compiled program per library (~30 s)
def test_gpt_step_pairs_are_the_same_optimizer_in_both_libraries():
    """Each timed pair (gradxform, optax) gives the same updates over three jitted steps
    on a small tree with two matrices (Muon's) and a vector, so the step-time comparison
    compares the same arithmetic; the GPT tree is the issue's size. (Jitted, as timed:
    run eagerly, ``b ** count`` of the bias corrections rounds differently from the
    fused kernel, 1e-5 relative in Adam's third update, in one library or the other.)"""
    import jax
    import numpy as np

    module = load_gpt_script()
    shapes = {"embed": (5, 4), "w": (4, 6), "b": (6,)}
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
             for _ in range(3)]  # fmt: skip

    def three_updates(tx):
        def run(params, grads):
            state, out = tx.init(params), []
            for g in grads:
                u, state = tx.update(g, state, params)
                out.append(u)
            return out

        return jax.jit(run)(params, grads)

    # yogi: optax starts m at initial_accumulator_value (1e-6) too, gradxform at 0 (the
    # paper's), tests/test_optimizers_more.py; early updates differ by more than rounding
    # schedule-free: an update is the difference of two iterates (y_new - y), so its rounding
    # is the parameters' (relative to their magnitude, as in tests/test_schedule_free.py)
    # muon: Newton-Schulz's matrix products carry a last-bit difference of the momentum
    # (which product XLA contracts into a multiply-add) to ~2e-6 of the update
    atol = {"yogi": 1e-3, "adopt": 5e-6, "muon": 5e-6}
    for name, (make_gx, make_optax) in module.PAIRS.items():
        for ours, theirs in zip(three_updates(make_gx()), three_updates(make_optax())):
            for k in shapes:
                a, b = np.asarray(ours[k]), np.asarray(theirs[k])
                scale = max(float(np.abs(b).max()), 1e-30)
                if name.startswith("schedule_free"):
                    scale = float(np.abs(params[k]).max())
                np.testing.assert_allclose(
                    a, b, rtol=0, atol=atol.get(name, 1e-6) * scale, err_msg=name
                )
    leaves = jax.tree.leaves(module.gpt_params())
    assert len(leaves) == 53 and 1.7e6 < sum(x.size for x in leaves) < 1.9e6
