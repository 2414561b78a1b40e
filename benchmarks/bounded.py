"""gradxform's L-BFGS-B against scipy's on bound-constrained problems: convergence and counts.

The test set is the Moré-Garbow-Hillstrom problems of ``tests/mgh.py`` (35
problems, n = 2 to 12, from their standard starting points), each in three
variants:

* ``box``: ``x0 - s <= x <= x0 + s`` with ``s = max(1, |x0|) / 2`` per
  variable (most minimizers lie outside, so bounds are active there);
* ``lower``: ``x_i >= x0_i + s_i / 2`` on the even-indexed variables, no
  bound on the others (``x0`` starts outside and is projected first);
* ``free``: no bounds (L-BFGS-B's unconstrained path).

Both solvers stop at the same tests: projected-gradient infinity norm
``<= 1e-5`` (scipy's default; gradxform's relative ``tol`` is set so the
threshold is the same absolute number), or relative reduction of ``f`` below
scipy's default ``ftol = 2.2e-9``; memory 10, at most 20 evaluations per line
search (scipy's defaults), 1,000 iterations. Reported per row: each solver's
status, iterations, evaluations of ``f`` and its gradient (scipy's ``nfev``,
gradxform's ``num_fun_evals``) and final value, and the bound constraints
active at gradxform's solution. All gradxform solves run as one vmapped
program: problems are padded to a common length with variables that cannot
move (fixed at 0 for the bounded variants, free with zero gradient for the
free variant), which leaves the iterates unchanged, and a ``lax.switch`` picks
each row's objective. Times are not compared here (that program evaluates
every problem's objective for every row; see ``second_order.py`` for
timings). Writes ``benchmarks/results/bounded.{json,md}``.

    python benchmarks/bounded.py
"""

from __future__ import annotations

import json
import pathlib
import platform
import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

import gradxform as gx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the shared test problems
from tests import mgh  # noqa: E402

GTOL = 1e-5  # scipy's default projected-gradient tolerance
MAXLS = 20  # scipy's default evaluations per line search
STATUS = {0: "SUCCESS", 1: "MAXITER", 2: "LINESEARCH_FAILED", 3: "NONFINITE", 4: "STALLED"}


class Case(NamedTuple):
    """One bound-constrained problem.

    Attributes:
        name: row label.
        fun: ``f(x)`` on a float64 vector of length ``n``, jnp operations only.
        x0: the start.
        lower: lower bounds (``-inf`` for none).
        upper: upper bounds (``inf`` for none).
    """

    name: str
    fun: Callable
    x0: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def mgh_cases(problems=mgh.PROBLEMS, variants=("box", "lower", "free")) -> list[Case]:
    """The MGH problems in the module's three variants."""
    cases = []
    for p in problems:
        fun = mgh.objective(p)  # one function per problem: one branch of gx_batch's switch
        s = 0.5 * np.maximum(1.0, np.abs(p.x0))
        inf = np.full(p.n, np.inf)
        even = np.arange(p.n) % 2 == 0
        bounds = {
            "box": (p.x0 - s, p.x0 + s),
            "lower": (np.where(even, p.x0 + 0.5 * s, -np.inf), inf),
            "free": (-inf, inf),
        }
        for v in variants:
            cases.append(Case(f"{p.name}/{v}", fun, p.x0, *bounds[v]))
    return cases


def projected_gradient_norm(x, g, lower, upper) -> float:
    """scipy's ``projgr``: the infinity norm of ``P(x - g) - x``."""
    pg = np.where(g < 0, np.maximum(x - upper, g), np.minimum(x - lower, g))
    return float(np.max(np.abs(pg)))


def switch_objective(cases: list[Case]):
    """``(objective(x, index), index per case, width)``: one ``lax.switch`` branch per function.

    ``x`` is padded to ``width``; each branch reads its problem's leading entries.
    """
    funs = list({id(c.fun): (c.fun, c.x0.size) for c in cases}.values())
    branches = [lambda x, f=f, n=n: f(x[:n]) for f, n in funs]
    which = np.array([[f for f, _ in funs].index(c.fun) for c in cases])

    def objective(x, index):
        return jax.lax.switch(index, branches, x)

    return objective, which, max(c.x0.size for c in cases)


def scipy_runs(cases: list[Case], maxiter: int = 1000) -> list[dict]:
    """scipy's L-BFGS-B on each case, with its per-iteration values (callback).

    The objective and gradient come from one jitted evaluator shared by the
    cases (:func:`switch_objective`), compiled once.
    """
    objective, which, width = switch_objective(cases)
    value_and_grad = jax.jit(jax.value_and_grad(objective))
    return [_scipy_run(c, value_and_grad, index, width, maxiter) for c, index in zip(cases, which)]


def _scipy_run(case: Case, value_and_grad, index, width: int, maxiter: int) -> dict:
    n = case.x0.size

    def fg(x):
        f, g = value_and_grad(jnp.asarray(np.concatenate([x, np.zeros(width - n)])), index)
        return float(f), np.asarray(g[:n], np.float64)

    values, xs = [], []

    def record(intermediate_result):  # scipy passes the iterate by this argument's name
        values.append(float(intermediate_result.fun))
        xs.append(np.array(intermediate_result.x))

    res = scipy.optimize.minimize(
        fg,
        case.x0,
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(case.lower, case.upper)),
        callback=record,
        options={"gtol": GTOL, "maxls": MAXLS, "maxiter": maxiter},
    )
    return {
        "status": "SUCCESS" if res.status == 0 else ("MAXITER" if res.status == 1 else "FAILED"),
        "nit": int(res.nit),
        "nfev": int(res.nfev),
        "fun": float(res.fun),
        "x": np.asarray(res.x),
        "values": values,
        "message": str(res.message),
        "xs": xs,
    }


def _padded(cases: list[Case]):
    """Starts and bounds padded to the longest ``n`` with variables that cannot move."""
    width = max(c.x0.size for c in cases)
    rows = []
    for c in cases:
        extra = width - c.x0.size
        constrained = np.any(np.isfinite(c.lower) | np.isfinite(c.upper))
        pad_lo, pad_hi = (0.0, 0.0) if constrained else (-np.inf, np.inf)
        rows.append(
            (
                np.concatenate([c.x0, np.zeros(extra)]),
                np.concatenate([c.lower, np.full(extra, pad_lo)]),
                np.concatenate([c.upper, np.full(extra, pad_hi)]),
            )
        )
    return [np.stack(a) for a in zip(*rows)]


def gx_batch(cases: list[Case], maxiter: int = 1000, history: bool = False) -> list[dict]:
    """gradxform's L-BFGS-B on every case in one vmapped solve (see the module docstring)."""
    objective, which, _ = switch_objective(cases)
    x0, lower, upper = _padded(cases)
    clipped = np.clip(x0, lower, upper)
    grad = jax.vmap(jax.grad(objective))(jnp.asarray(clipped), jnp.asarray(which))
    grads = np.asarray(grad)
    pg0 = [projected_gradient_norm(*a) for a in zip(clipped, grads, lower, upper)]
    tol = np.array([GTOL / max(1.0, p) for p in pg0])

    def solve(x0, lower, upper, index, tol):
        return gx.minimize(
            objective,
            x0,
            method="l-bfgs-b",
            bounds=(lower, upper),
            args=(index,),
            tol=tol,
            maxiter=maxiter,
            max_linesearch_steps=MAXLS,
            history=history,
        )

    sol = jax.vmap(solve)(x0, lower, upper, jnp.asarray(which), tol)
    out = []
    for i, c in enumerate(cases):
        n, k = c.x0.size, int(sol.iterations[i])
        x = np.asarray(sol.params[i][:n])
        out.append(
            {
                "status": STATUS[int(sol.status[i])],
                "message": gx.second_order.solution.message(sol.status[i], sol.stopping_test[i]),
                "stopping_test": int(sol.stopping_test[i]),
                "nit": k,
                "nfev": int(sol.num_fun_evals[i]),
                "fun": float(sol.value[i]),
                "x": x,
                "values": np.asarray(sol.history.value[i][1 : k + 1]).tolist() if history else None,
                "active": int(np.sum((x <= c.lower) | (x >= c.upper))),
                "tol": float(tol[i]),
                "pg0": pg0[i],
            }
        )
    return out


def table(cases: list[Case], ours: list[dict], theirs: list[dict]) -> tuple[list[str], dict]:
    """Markdown rows and the summary the bar is judged on."""
    lines = [
        "| problem | n | active | scipy status | gx status | scipy nit | gx nit "
        "| scipy nfev | gx nfev | scipy f | gx f |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    both = [i for i, t in enumerate(theirs) if t["status"] == "SUCCESS"]
    missed = [cases[i].name for i in both if ours[i]["status"] != "SUCCESS"]
    over = []
    for c, o, t in zip(cases, ours, theirs):
        if o["nfev"] > 1.05 * t["nfev"]:
            over.append(c.name)
        lines.append(
            f"| {c.name} | {c.x0.size} | {o['active']} | {t['status']} | {o['status']} "
            f"| {t['nit']} | {o['nit']} | {t['nfev']} | {o['nfev']} | {t['fun']:.6g} | {o['fun']:.6g} |"
        )
    summary = {
        "rows": len(cases),
        "scipy_converged": len(both),
        "gx_converged_where_scipy_did": len(both) - len(missed),
        "missed": missed,
        "nfev_scipy": int(sum(theirs[i]["nfev"] for i in both)),
        "nfev_gx": int(sum(ours[i]["nfev"] for i in both)),
        "rows_over_5_percent": over,
        "identical_counts": sum(
            o["nfev"] == t["nfev"] and o["nit"] == t["nit"] for o, t in zip(ours, theirs)
        ),
    }
    return lines, summary


def main() -> None:
    # float64 switched on here, not at import: tests/test_lbfgsb.py imports this module
    jax.config.update("jax_enable_x64", True)
    cases = mgh_cases()
    theirs = scipy_runs(cases)
    ours = gx_batch(cases)
    lines, summary = table(cases, ours, theirs)
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}, jax {jax.__version__}"
    header = [
        "# L-BFGS-B: gradxform against scipy on bounded MGH problems",
        "",
        f"Recorded by `python benchmarks/bounded.py` on {machine}, scipy {scipy.__version__}. "
        "Counts only (no timings): see the script's docstring for the protocol.",
        "",
        f"- rows: {summary['rows']}; scipy converged on {summary['scipy_converged']}, "
        f"gradxform converged on {summary['gx_converged_where_scipy_did']} of those"
        + (f" (not on: {', '.join(summary['missed'])})" if summary["missed"] else ""),
        f"- evaluations on those rows: scipy {summary['nfev_scipy']}, gradxform "
        f"{summary['nfev_gx']} ({summary['nfev_gx'] / summary['nfev_scipy']:.3f}x)",
        f"- rows where gradxform needed more than 1.05x scipy's evaluations: "
        f"{len(summary['rows_over_5_percent'])}"
        + (
            f" ({', '.join(summary['rows_over_5_percent'])})"
            if summary["rows_over_5_percent"]
            else ""
        ),
        f"- rows with identical iteration and evaluation counts: {summary['identical_counts']}",
        "",
    ]
    out = pathlib.Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "bounded.md").write_text("\n".join(header + lines) + "\n")
    rows = [
        {"name": c.name, "gx": {k: v for k, v in o.items() if k not in ("x", "values")},
         "scipy": {k: v for k, v in t.items() if k not in ("x", "values", "xs")}}
        for c, o, t in zip(cases, ours, theirs)
    ]  # fmt: skip
    (out / "bounded.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print("\n".join(header + lines))


if __name__ == "__main__":
    main()
