"""gx.least_squares against scipy.optimize.least_squares on the Moré-Garbow-Hillstrom set.

For each of the 35 problems of tests/mgh.py (float64, the paper's starting
points), runs ``gx.least_squares`` (Levenberg-Marquardt with a dense Jacobian,
the same with geodesic acceleration, matrix-free LM, dense Gauss-Newton) and
scipy's ``method="lm"`` (MINPACK's lmder) and ``method="trf"``, all with the
default tolerances (ftol = xtol = gtol = 1e-8, max_nfev = 100 n) and the exact
Jacobian (``jax.jacfwd``, jitted, for scipy). A solve *reaches* the minimum
when ``sum(r**2)`` equals the paper's minimum, or one of the other minima it
lists, to 5 significant digits (absolute 1e-10 for a zero minimum), the test
of tests/test_mgh.py.

Reports per problem: reached or not, residual and Jacobian evaluations, and
the run time of a compiled gx solve against scipy's (median of ``--repeats``
runs, interleaved; single-thread, see the ``XLA_FLAGS`` below), then the
totals and the issue's bar: gx LM reaches the minimum wherever scipy's lm or
trf does, with no more evaluations.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
    python3 benchmarks/least_squares.py [--quick] [--out docs/results/least_squares.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import numpy as np
from scipy.optimize import least_squares as scipy_least_squares

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import gradxform as gx  # noqa: E402
from tests.mgh import PROBLEMS  # noqa: E402

GX_VARIANTS = {
    "gx lm": {"method": "lm", "jacobian": "dense"},
    "gx lm geodesic": {"method": "lm", "jacobian": "dense", "geodesic": True},
    "gx lm matvec": {"method": "lm", "jacobian": "matvec"},
    "gx gauss-newton": {"method": "gauss-newton", "jacobian": "dense"},
}
SCIPY = ("scipy lm", "scipy trf")


def published(value: float, p) -> bool:
    """``value`` is one of the paper's minima to 5 significant digits (tests/test_mgh.py)."""
    return any(abs(value - t) <= max(1e-5 * abs(t), 1e-10) for t in (p.f_min, *p.f_other))


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_gx(p, options, repeats):
    def residual(x):
        return p.residual(x)

    def call():
        sol = gx.least_squares(residual, jax.numpy.asarray(p.x0), **options)
        jax.block_until_ready(sol)
        return sol

    sol = call()  # compiles
    f = 2 * float(sol.value)
    row = {
        "f": f,
        "reached": published(f, p),
        "nfev": int(sol.num_fun_evals),
        "njev": int(sol.num_grad_evals),
        "products": int(sol.num_hvp_evals),
        "status": gx.Status(int(sol.status)).name,
    }
    row["seconds"] = median_seconds(call, repeats) if repeats else float("nan")
    return row


def run_scipy(p, method, repeats):
    residual = jax.jit(p.residual)
    jacobian = jax.jit(jax.jacfwd(p.residual))

    def call():
        return scipy_least_squares(
            lambda x: np.asarray(residual(x)),
            p.x0,
            jac=lambda x: np.asarray(jacobian(x)),
            method=method,
        )

    sol = call()
    f = float(np.sum(sol.fun**2))
    row = {
        "f": f,
        "reached": published(f, p),
        "nfev": int(sol.nfev),
        "njev": int(sol.njev),
        "products": 0,
        "status": str(sol.status),
    }
    row["seconds"] = median_seconds(call, repeats) if repeats else float("nan")
    return row


def table(results, problems) -> list[str]:
    names = list(GX_VARIANTS) + list(SCIPY)
    head = "| problem | n | m | " + " | ".join(f"{k}: f-evals / J-evals" for k in names) + " |"
    lines = [head, "|" + "---|" * (3 + len(names))]
    for p in problems:
        cells = []
        for k in names:
            r = results[p.name][k]
            mark = "" if r["reached"] else " ✗"
            cells.append(f"{r['nfev']} / {r['njev']}{mark}")
        lines.append(f"| {p.name} | {p.n} | {p.m} | " + " | ".join(cells) + " |")
    return lines


def totals(results, problems) -> list[str]:
    names = list(GX_VARIANTS) + list(SCIPY)
    lines = ["| solver | reached | f-evals | J-evals | J^T J v products | median time (ms) |"]
    lines.append("|---|---|---|---|---|---|")
    for k in names:
        rows = [results[p.name][k] for p in problems]
        times = [r["seconds"] * 1e3 for r in rows]
        lines.append(
            f"| {k} | {sum(r['reached'] for r in rows)} / {len(rows)} | "
            f"{sum(r['nfev'] for r in rows)} | {sum(r['njev'] for r in rows)} | "
            f"{sum(r['products'] for r in rows)} | {np.median(times):.2f} |"
        )
    return lines


def bar(results, problems) -> list[str]:
    """Where scipy lm or trf reaches a minimum, gx lm does, with no more evaluations."""
    lines = []
    for ref in SCIPY:
        missed, more = [], []
        for p in problems:
            ours, theirs = results[p.name]["gx lm"], results[p.name][ref]
            if theirs["reached"] and not ours["reached"]:
                missed.append(p.name)
            if ours["reached"] and theirs["reached"]:
                if ours["nfev"] > theirs["nfev"] or ours["njev"] > theirs["njev"]:
                    more.append(
                        f"{p.name} ({ours['nfev']}/{ours['njev']} vs "
                        f"{theirs['nfev']}/{theirs['njev']})"
                    )
        reached_ours = sum(results[p.name]["gx lm"]["reached"] for p in problems)
        reached_theirs = sum(results[p.name][ref]["reached"] for p in problems)
        lines.append(
            f"- vs {ref}: gx lm reaches {reached_ours}, {ref} {reached_theirs}; "
            f"reached by {ref} but not gx lm: {missed or 'none'}; "
            f"more evaluations than {ref} (both reached): {more or 'none'}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first 8 problems, no timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the markdown here")
    a = parser.parse_args()
    problems = PROBLEMS[:8] if a.quick else PROBLEMS
    repeats = 0 if a.quick else a.repeats
    results = {}
    for p in problems:
        results[p.name] = {k: run_gx(p, o, repeats) for k, o in GX_VARIANTS.items()}
        for method in ("lm", "trf"):
            results[p.name][f"scipy {method}"] = run_scipy(p, method, repeats)
        print(
            p.name,
            {k: (r["reached"], r["nfev"], r["njev"]) for k, r in results[p.name].items()},
            flush=True,
        )
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)"
    lines = [
        f"Machine: {machine}; jax {jax.__version__}; float64; single-thread.",
        "",
        *totals(results, problems),
        "",
        "Bar (issue #20):",
        "",
        *bar(results, problems),
        "",
        "Per problem: residual evaluations / Jacobian evaluations (✗: did not reach a "
        "published minimum). For `gx lm geodesic` the f-evals include one second directional "
        "derivative per trial; for `gx lm matvec` the J-evals are linearisations and its "
        "products are in the totals table.",
        "",
        *table(results, problems),
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
