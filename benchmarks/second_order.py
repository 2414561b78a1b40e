"""gradxform's second-order solvers side by side with scipy, optax and optimistix.

For each problem and precision, every solver starts from the same point and
runs to ``|grad f| <= 1e-6 max(1, |grad f(x0)|)`` (2-norm). Reported per
solver: whether the final gradient meets that target (measured here, not the
solver's own verdict), gradient evaluations counted by instrumenting the
objective (a callback inside the JAX objective; a wrapper around scipy's),
iterations, second-order products (dense Hessians for Newton and trust-exact,
Hessian-vector products for Newton-CG; each solver's own count, scipy's counted by
wrapping its ``hess``/``hessp``), compile time (first call minus a warm call) and the warm run time:
the median over 7 rounds, each running every solver of the problem in turn (the
box's speed drifts; interleaving gives every solver the same conditions). Writes
``benchmarks/results/second_order.{json,md}``.

    python benchmarks/second_order.py            # the standard table (a few minutes on 2 cores)
    python benchmarks/second_order.py --quick    # small problems only

The Moré-Garbow-Hillstrom set (tests/mgh.py, 35 problems, n <= 12), one row per problem
and solver (``MGH_SOLVERS``: gx trust-exact, trust-ncg, newton, bfgs, lbfgs and scipy's
trust-exact, trust-ncg, BFGS, L-BFGS-B; other solvers append theirs there), single
thread, warm compiled times (min of repeats, a problem's solvers interleaved); writes
``benchmarks/results/mgh.{json,md}``:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
    python benchmarks/second_order.py --mgh [--problems biggs_exp6,osborne1]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

jax.config.update("jax_enable_x64", True)

import gradxform as gx  # noqa: E402
from gradxform.curvature import dense_hessian  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the shared test problems
from tests.references import (  # noqa: E402
    boundary_value,
    boundary_value_start,
    brown_badly_scaled,
    chebyquad,
)

TOL = 1e-6


# --- problems -----------------------------------------------------------------------


def rosenbrock(x):
    return jnp.sum(100 * (x[1::2] - x[::2] ** 2) ** 2 + (1 - x[::2]) ** 2)


def make_quadratic(n, condition=1e4, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eig = np.logspace(0, np.log10(condition), n)
    a = (q * eig) @ q.T
    b = rng.normal(size=n)

    def quadratic(x):
        return 0.5 * x @ (jnp.asarray(a, x.dtype) @ x) - jnp.asarray(b, x.dtype) @ x

    return quadratic


def make_logistic_digits(l2=1e-3):
    from sklearn.datasets import load_digits

    data = load_digits()
    X = data.data / 16.0
    Y = np.eye(10)[data.target]

    def logistic(w):
        W, c = w[:640].reshape(64, 10), w[640:]
        logits = jnp.asarray(X, w.dtype) @ W + c
        return jnp.mean(
            jax.nn.logsumexp(logits, axis=1) - jnp.sum(logits * jnp.asarray(Y, w.dtype), axis=1)
        ) + l2 * jnp.sum(w**2)

    return logistic


def problems(quick: bool):
    table = {
        "rosenbrock_2d": (rosenbrock, np.array([-1.2, 1.0])),
        "brown_badly_scaled_2": (brown_badly_scaled, np.array([1.0, 1.0])),
        "chebyquad_8": (chebyquad, np.arange(1, 9) / 9.0),
        "boundary_value_100": (boundary_value, boundary_value_start(100)),
        "ext_rosenbrock_100": (rosenbrock, np.tile([-1.2, 1.0], 50)),
        "quadratic_100_cond1e4": (make_quadratic(100), np.zeros(100)),
        "logistic_digits_650": (make_logistic_digits(), np.zeros(650)),
    }
    if not quick:
        table["ext_rosenbrock_10000"] = (rosenbrock, np.tile([-1.2, 1.0], 5000))
        table["quadratic_1000_cond1e4"] = (make_quadratic(1000), np.zeros(1000))
        table["ext_rosenbrock_100000"] = (rosenbrock, np.tile([-1.2, 1.0], 50000))
    return table


# --- instrumentation ----------------------------------------------------------------


class Counter:
    def __init__(self):
        self.n = 0

    def __call__(self, *_):
        self.n += 1


def counted(fun, counter):
    def f(x):
        jax.debug.callback(counter, x[0])
        return fun(x)

    return f


class Timing:
    """A compiled solve, timed later in rounds interleaved with the other solvers of the same
    problem, so that every solver sees the same machine state (a shared 2-core box drifts by
    tens of percent over a minute)."""

    def __init__(self, call, first_seconds):
        self.call, self.first, self.samples = call, first_seconds, []

    @property
    def run_s(self):
        return statistics.median(self.samples)

    @property
    def compile_s(self):
        return 0.0 if self.first is None else max(self.first - self.run_s, 0.0)


def deferred(call, compiled=True):
    """``call`` is run once now (its first call: compile + run) and timed later."""
    start = time.perf_counter()
    jax.block_until_ready(call())
    return Timing(call, time.perf_counter() - start if compiled else None)


def interleave(timings, rounds=7, round_seconds=0.02):
    """Each round runs every solver for >= ``round_seconds`` (>= 1 call), one after another;
    a round's mean per call is one sample; the reported time is the median over rounds."""
    for _ in range(rounds):
        for t in timings:
            calls, start = 0, time.perf_counter()
            while True:
                jax.block_until_ready(t.call())
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= round_seconds:
                    break
            t.samples.append(elapsed / calls)


# --- solvers ------------------------------------------------------------------------


def gx_solver(method, **options):
    def solve(fun, x0, maxiter):
        return gx.minimize(fun, x0, method=method, tol=TOL, maxiter=maxiter, **options)

    def run(fun, x0, maxiter):
        if method in ("newton", "newton-cg"):
            # a callback inside f would also fire inside Hessian(-vector) products:
            # count value_and_grad calls as the solver reports them (marked * in the table)
            sol = solve(fun, x0, maxiter)
            evals = f"{int(sol.num_grad_evals)}*"
            products = int(sol.num_hess_evals if method == "newton" else sol.num_hvp_evals)
        else:
            counter = Counter()
            sol = solve(counted(fun, counter), x0, maxiter)
            evals, products = counter.n, None
        timing = deferred(lambda: solve(fun, x0, maxiter).params)
        if method == "newton" and x0.size <= 100:
            work = newton_floor(fun, int(sol.num_hess_evals), int(sol.num_fun_evals))
            timing.floor = deferred(lambda: work(x0))
        return np.asarray(sol.params), evals, int(sol.iterations), products, timing

    return run


def newton_floor(fun, hessians, evaluations):
    """The arithmetic a Newton solve cannot avoid, with no solver around it: ``hessians``
    dense Hessians, each Cholesky-factorised and solved, and ``evaluations``
    value-and-gradient calls, as straight-line jitted code (each step feeds the next, so
    none is skipped; XLA may still merge work that does not depend on the iterate, e.g. a
    quadratic's constant Hessian, as it does inside the solve). What the solve costs
    beyond this is its line search, tests and loop, and XLA:CPU's dispatch of them."""
    value_and_grad = jax.value_and_grad(fun)

    @jax.jit
    def work(x):
        for i in range(max(hessians, evaluations)):
            _, g = value_and_grad(x)
            step = g
            if i < hessians:
                factor = jax.lax.linalg.cholesky(dense_hessian(fun, x), symmetrize_input=False)
                step = jax.scipy.linalg.cho_solve((factor, True), g)
            x = x - 1e-30 * step
        return x

    return work


def optax_lbfgs(fun, x0, maxiter):
    import optax

    def solve(f, x0):
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(f)
        g0 = jnp.linalg.norm(jax.grad(f)(x0))
        target = TOL * jnp.maximum(1.0, g0)

        def step(carry):
            x, state, k = carry
            value, grad = value_and_grad(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
            return optax.apply_updates(x, updates), state, k + 1

        def cond(carry):
            _, state, k = carry
            grad = optax.tree.get(state, "grad")
            return (k == 0) | ((k < maxiter) & (optax.tree.norm(grad) > target))

        x, _, k = jax.lax.while_loop(cond, step, (x0, opt.init(x0), 0))
        return x, k

    counter = Counter()
    x, k = jax.jit(lambda x0: solve(counted(fun, counter), x0))(x0)
    jitted = jax.jit(lambda x0: solve(fun, x0)[0])
    timing = deferred(lambda: jitted(x0))
    # the loop's first step evaluates f at x0 once more than gx (no value in state yet)
    return np.asarray(x), counter.n, int(k), None, timing


def optimistix_solver(name):
    def run(fun, x0, maxiter):
        import optimistix as optx

        solver = getattr(optx, name)(rtol=1e-10, atol=1e-10)

        def solve(f, x0):
            sol = optx.minimise(lambda y, _: f(y), solver, x0, max_steps=maxiter, throw=False)
            return sol.value, sol.stats["num_steps"]

        counter = Counter()
        x, k = jax.jit(lambda x0: solve(counted(fun, counter), x0))(x0)
        jitted = jax.jit(lambda x0: solve(fun, x0)[0])
        timing = deferred(lambda: jitted(x0))
        return np.asarray(x), counter.n, int(k), None, timing

    return run


def scipy_solver(method):
    def run(fun, x0, maxiter):
        x0 = np.asarray(x0)
        dtype = x0.dtype
        value_and_grad = jax.jit(jax.value_and_grad(fun))
        hess = jax.jit(jax.hessian(fun))
        hvp = jax.jit(lambda x, v: jax.jvp(jax.grad(fun), (x,), (v,))[1])
        counter, products = Counter(), Counter()

        def fg(x):
            counter()
            f, g = value_and_grad(jnp.asarray(x, dtype))
            return float(f), np.asarray(g, np.float64)

        g0 = np.linalg.norm(fg(x0)[1])
        counter.n = 0
        target = TOL * max(1.0, g0)
        n = x0.size
        kwargs = {"jac": True, "method": method}
        if method == "L-BFGS-B":
            kwargs["options"] = {"gtol": target / np.sqrt(n), "ftol": 0.0, "maxiter": maxiter}
        elif method == "BFGS":
            kwargs["options"] = {"gtol": target, "norm": 2, "maxiter": maxiter}
        elif method == "Newton-CG":

            def hessp(x, v):
                products()
                return np.asarray(hvp(jnp.asarray(x, dtype), jnp.asarray(v, dtype)), np.float64)

            kwargs["hessp"] = hessp
            kwargs["options"] = {"xtol": 1e-14, "maxiter": maxiter}
        elif method == "trust-exact":

            def hessian(x):
                products()
                return np.asarray(hess(jnp.asarray(x, dtype)), np.float64)

            kwargs["hess"] = hessian
            kwargs["options"] = {"gtol": target, "maxiter": maxiter}

        def solve():
            return scipy.optimize.minimize(fg, x0.astype(np.float64), **kwargs)

        res = solve()
        evals = counter.n
        used = products.n if method in ("Newton-CG", "trust-exact") else None
        timing = deferred(solve, compiled=False)  # its jitted pieces are compiled by now
        return res.x.astype(dtype), evals, int(res.nit), used, timing

    return run


def solvers(n: int, dtype: str = "float64"):
    table = {
        "gx lbfgs": gx_solver("lbfgs"),
        "gx newton-cg": gx_solver("newton-cg"),
        "optax lbfgs": optax_lbfgs,
        "scipy L-BFGS-B": scipy_solver("L-BFGS-B"),
        "scipy Newton-CG": scipy_solver("Newton-CG"),
    }
    if n <= 1000:
        table["gx bfgs"] = gx_solver("bfgs")
        if dtype == "float32":
            # scipy keeps its iterate and inverse Hessian in float64 around a float32
            # objective; this row keeps gx's curvature model in float64 the same way
            table["gx bfgs (f64 curvature)"] = gx_solver("bfgs", float64_accumulation=True)
        table["scipy BFGS"] = scipy_solver("BFGS")
    if n <= 650:
        table["gx newton"] = gx_solver("newton")
        table["scipy trust-exact"] = scipy_solver("trust-exact")
    try:
        import optimistix  # noqa: F401

        if n <= 1000:
            table["optimistix BFGS"] = optimistix_solver("BFGS")
        table["optimistix LBFGS"] = optimistix_solver("LBFGS")
    except ImportError:
        pass
    return table


SCIPY_PEER = {
    "gx lbfgs": "scipy L-BFGS-B",
    "gx bfgs": "scipy BFGS",
    "gx bfgs (f64 curvature)": "scipy BFGS",
    "gx newton": "scipy trust-exact",
    "gx newton-cg": "scipy Newton-CG",
}


def bar_lines(rows):
    """The issue's bars, checked row by row: one Markdown table."""
    table = {(r["problem"], r["dtype"], r["solver"]): r for r in rows if "error" not in r}

    def evals(r):
        return int(str(r["grad_evals"]).rstrip("*"))

    out = [
        "## Bars",
        "",
        "| bar | problem | dtype | gradxform | reference | met |",
        "|---|---|---|---|---|---|",
    ]

    def add(bar, key, ours, ref, met):
        out.append(f"| {bar} | {key[0]} | {key[1]} | {ours} | {ref} | {'yes' if met else 'NO'} |")

    for (problem, dtype, solver), r in table.items():
        key = (problem, dtype)
        if solver == "gx lbfgs":
            peers = [table.get((problem, dtype, p)) for p in ("scipy L-BFGS-B", "optax lbfgs")]
            peers = [p for p in peers if p is not None and p["converged"]]
            best = min((evals(p) for p in peers), default=None)
            met = r["converged"] and (best is None or evals(r) <= 1.05 * best)
            add("L-BFGS: converges, evals <= 1.05 x best peer", key, evals(r), best, met)
        if solver.startswith("gx bfgs"):
            peer = table.get((problem, dtype, "scipy BFGS"))
            if peer is not None:
                met = r["converged"] and (not peer["converged"] or evals(r) <= evals(peer))
                ref = f"{evals(peer)}{'' if peer['converged'] else ' (not converged)'}"
                add(f"BFGS: evals <= scipy BFGS ({solver})", key, evals(r), ref, met)
                if r["n"] >= 1000:
                    ratio = peer["run_s"] / r["run_s"]
                    add(
                        "BFGS: >= 10x faster than scipy at n=1000",
                        key,
                        f"{ratio:.0f}x",
                        "",
                        ratio >= 10,
                    )
        if solver == "gx newton":
            peer = table.get((problem, dtype, "scipy trust-exact"))
            if peer is not None:
                met = r["converged"] and r["hessian_pd"] and r["iterations"] <= peer["iterations"]
                add(
                    "Newton: PD minimum, iterations <= trust-exact",
                    key,
                    r["iterations"],
                    peer["iterations"],
                    met,
                )
        if solver == "gx newton-cg":
            peer = table.get((problem, dtype, "scipy Newton-CG"))
            if peer is not None and peer["converged"]:
                met = r["converged"] and r["products"] <= 2 * peer["products"]
                add(
                    "Newton-CG: Hessian-vector products <= 2 x scipy Newton-CG",
                    key,
                    r["products"],
                    peer["products"],
                    met,
                )
        if solver in SCIPY_PEER and r["n"] <= 100:
            peer = table.get((problem, dtype, SCIPY_PEER[solver]))
            if peer is not None:
                ratio = peer["run_s"] / r["run_s"]
                floor = ""
                if "floor_s" in r:
                    floor = (
                        f"; the Newton floor (Hessians, factorisations, evaluations alone) "
                        f"{r['floor_s'] * 1e3:.2f} ms would be {peer['run_s'] / r['floor_s']:.1f}x"
                    )
                add(
                    f"{solver}: >= 10x faster than {SCIPY_PEER[solver]} (n <= 100)",
                    key,
                    f"{r['run_s'] * 1e3:.2f} ms",
                    f"{peer['run_s'] * 1e3:.2f} ms ({ratio:.1f}x)"
                    + ("" if peer["converged"] else "; scipy stopped unconverged")
                    + floor,
                    ratio >= 10,
                )
    return out


# --- the Moré-Garbow-Hillstrom table ---------------------------------------------------


def mgh_gx(method):
    """A gx.minimize row: ``(fun, x0, gtol_relative, maxiter) -> record``."""

    def run(fun, x0, maxiter):
        def call():
            return gx.minimize(fun, x0, method=method, tol=TOL, maxiter=maxiter)

        sol = call()
        return dict(
            success=bool(sol.success),
            x=np.asarray(sol.params),
            iterations=int(sol.iterations),
            f_evals=int(sol.num_fun_evals),
            g_evals=int(sol.num_grad_evals),
            h_evals=int(sol.num_hess_evals) + int(sol.num_hvp_evals),
            call=lambda: jax.block_until_ready(call().params),
        )

    return run


def mgh_scipy(method):
    """A scipy.optimize.minimize row with jitted JAX derivatives (same stopping target)."""

    def run(fun, x0, maxiter):
        value_and_grad = jax.jit(jax.value_and_grad(fun))
        hess = jax.jit(jax.hessian(fun))
        hvp = jax.jit(lambda x, v: jax.jvp(jax.grad(fun), (x,), (v,))[1])
        x0 = np.asarray(x0)
        target = TOL * max(1.0, float(np.linalg.norm(value_and_grad(x0)[1])))
        kwargs = {"jac": True, "method": method, "options": {"maxiter": maxiter, "gtol": target}}
        if method == "trust-exact":
            kwargs["hess"] = lambda x: np.asarray(hess(x))
        elif method == "trust-ncg":
            kwargs["hessp"] = lambda x, v: np.asarray(hvp(x, v))
        elif method == "BFGS":
            kwargs["options"]["norm"] = 2
        else:  # L-BFGS-B: an infinity-norm test; the 2-norm target / sqrt(n) implies it
            kwargs["options"] = {"maxiter": maxiter, "gtol": target / np.sqrt(x0.size), "ftol": 0}

        def call():
            return scipy.optimize.minimize(
                lambda x: tuple(np.asarray(v) for v in value_and_grad(x)), x0, **kwargs
            )

        res = call()
        return dict(
            success=bool(res.success),
            x=np.asarray(res.x),
            iterations=int(res.nit),
            f_evals=int(res.nfev),
            g_evals=int(res.get("njev", res.nfev)),
            h_evals=int(res.get("nhev", 0)),
            call=call,
        )

    return run


# Rows of the MGH table: (name, run). Least squares and L-BFGS-B add theirs here.
MGH_SOLVERS = [
    ("gx trust-exact", mgh_gx("trust-exact")),
    ("gx trust-ncg", mgh_gx("trust-ncg")),
    ("gx newton", mgh_gx("newton")),
    ("gx bfgs", mgh_gx("bfgs")),
    ("gx lbfgs", mgh_gx("lbfgs")),
    ("scipy trust-exact", mgh_scipy("trust-exact")),
    ("scipy trust-ncg", mgh_scipy("trust-ncg")),
    ("scipy BFGS", mgh_scipy("BFGS")),
    ("scipy L-BFGS-B", mgh_scipy("L-BFGS-B")),
]


def mgh_table(args) -> list[str]:
    """Runs ``MGH_SOLVERS`` on tests/mgh.py; returns the markdown table."""
    from tests.mgh import PROBLEMS, objective

    wanted = set(filter(None, args.problems.split(",")))
    names = set(filter(None, args.solvers.split(",")))
    rows = []
    for p in PROBLEMS:
        if wanted and p.name not in wanted:
            continue
        fun, x0 = objective(p), jnp.asarray(p.x0)
        target = TOL * max(1.0, float(jnp.linalg.norm(jax.grad(fun)(x0))))
        records = {}
        for sname, run in MGH_SOLVERS:
            if names and sname not in names:
                continue
            try:
                records[sname] = run(fun, x0, args.maxiter)
            except Exception as err:  # a crash is a row
                rows.append(dict(problem=p.name, n=p.n, solver=sname, error=repr(err)[:120]))
        times = {sname: [] for sname in records}
        for _ in range(args.repeats):  # interleaved: one call of each solver per round
            for sname, rec in records.items():
                start = time.perf_counter()
                rec["call"]()
                times[sname].append(time.perf_counter() - start)
        for sname, rec in records.items():
            del rec["call"]
            x = jnp.asarray(rec.pop("x"))
            value = float(fun(x))
            known = (p.f_min, *p.f_other)
            rows.append(
                dict(
                    problem=p.name,
                    n=p.n,
                    solver=sname,
                    converged=bool(float(jnp.linalg.norm(jax.grad(fun)(x))) <= target),
                    value=value,
                    at_known_minimum=any(abs(value - v) <= 1e-4 * abs(v) + 1e-8 for v in known),
                    run_s=min(times[sname]),
                    **rec,
                )
            )
            print(json.dumps(rows[-1]), flush=True)
    lines = [
        "| problem | n | solver | converged | f | iterations | f evals | g evals | H evals | run ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['problem']} | {r['n']} | {r['solver']} | error: {r['error']} |||||||"
            )
            continue
        conv = ("yes" if r["converged"] else "NO") + ("" if r["at_known_minimum"] else " (other f)")
        lines.append(
            f"| {r['problem']} | {r['n']} | {r['solver']} | {conv} | {r['value']:.6g} | "
            f"{r['iterations']} | {r['f_evals']} | {r['g_evals']} | {r['h_evals']} | "
            f"{1e3 * r['run_s']:.3f} |"
        )
    lines += ["", *mgh_bar(rows)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mgh.json").write_text(json.dumps(rows, indent=1))
    (args.out / "mgh.md").write_text("\n".join(lines) + "\n")
    return lines


def mgh_bar(rows) -> list[str]:
    """Issue #20's trust-region bar: where scipy trust-exact converges, gx trust-exact
    converges in <= 1.05x its iterations and >= 10x faster (n <= 100)."""
    by = {(r["problem"], r["solver"]): r for r in rows if "error" not in r}
    out = []
    for (problem, solver), ref in by.items():
        if solver != "scipy trust-exact" or not ref["converged"]:
            continue
        ours = by.get((problem, "gx trust-exact"))
        if ours is None:
            continue
        ok = (
            ours["converged"]
            and ours["iterations"] <= 1.05 * ref["iterations"]
            and ref["run_s"] >= 10 * ours["run_s"]
        )
        out.append(
            f"- {problem}: {'meets' if ok else 'MISSES'} the bar (iterations {ours['iterations']} "
            f"vs {ref['iterations']}, {ref['run_s'] / ours['run_s']:.1f}x faster, "
            f"converged {ours['converged']})"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mgh", action="store_true", help="the Moré-Garbow-Hillstrom table")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (--mgh)")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--maxiter", type=int, default=2000)
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results"
    )
    parser.add_argument(
        "--problems", default="", help="comma-separated problem names (default all)"
    )
    parser.add_argument("--solvers", default="", help="comma-separated solver names (default all)")
    args = parser.parse_args()
    if args.mgh:
        print("\n".join(mgh_table(args)))
        return
    wanted_problems = set(filter(None, args.problems.split(",")))
    wanted_solvers = set(filter(None, args.solvers.split(",")))
    rows = []
    for pname, (fun, x0_np) in problems(args.quick).items():
        if wanted_problems and pname not in wanted_problems:
            continue
        for dtype in args.dtypes.split(","):
            x0 = jnp.asarray(x0_np, dtype)
            g0 = float(jnp.linalg.norm(jax.grad(fun)(jnp.asarray(x0_np))))
            target = TOL * max(1.0, g0)
            floor = 0.0
            if dtype == "float32":
                # the gradient norm float32 itself computes at the (float64) solution: no
                # float32 solver can be asked for less; the target becomes max(10 x, 10 floor)
                exact = gx.minimize(fun, jnp.asarray(x0_np), tol=1e-12, maxiter=20000).params
                floor = float(jnp.linalg.norm(jax.grad(fun)(exact.astype(jnp.float32))))
                target = max(10 * target, 10 * floor)
            pending, first_row = [], len(rows)
            for sname, run in solvers(x0.size, dtype).items():
                if wanted_solvers and sname not in wanted_solvers:
                    continue
                try:
                    x, evals, iters, products, timing = run(fun, x0, args.maxiter)
                    gnorm = float(jnp.linalg.norm(jax.grad(fun)(jnp.asarray(x, jnp.float64))))
                    hess_pd = None
                    if x0.size <= 650 and ("newton" in sname.lower() or "trust" in sname):
                        hess_pd = bool(
                            np.linalg.eigvalsh(
                                np.asarray(jax.hessian(fun)(jnp.asarray(x, jnp.float64)))
                            ).min()
                            > 0
                        )
                    row = dict(
                        problem=pname,
                        n=int(x0.size),
                        dtype=dtype,
                        solver=sname,
                        converged=bool(gnorm <= target),
                        grad_norm=gnorm,
                        target=target,
                        grad_evals=evals,
                        iterations=iters,
                        products=products,
                        hessian_pd=hess_pd,
                        value=float(fun(jnp.asarray(x, jnp.float64))),
                    )
                    pending.append((row, timing))
                except Exception as err:  # a solver that crashes is a row, not the end of the table
                    row = dict(
                        problem=pname,
                        n=int(x0.size),
                        dtype=dtype,
                        solver=sname,
                        error=repr(err)[:200],
                    )
                rows.append(row)
            floors = [t.floor for _, t in pending if hasattr(t, "floor")]
            interleave([timing for _, timing in pending] + floors)
            for row, timing in pending:
                row.update(compile_s=timing.compile_s, run_s=timing.run_s)
                if hasattr(timing, "floor"):
                    row["floor_s"] = timing.floor.run_s
            for row in rows[first_row:]:
                print(json.dumps(row), flush=True)
    machine = f"{platform.machine()}, {jax.devices()[0].device_kind}, jax {jax.__version__}, scipy {scipy.__version__}"
    lines = [
        "# Second-order solvers side by side",
        "",
        f"Machine: {machine}. Target: |grad| <= {TOL} max(1, |grad(x0)|), measured in float64 at the "
        "returned point; in float32 the target is 10x that, or 10x the gradient norm float32 "
        "computes at the exact solution where that is larger (the float32 floor).",
        "Gradient evaluations are counted by instrumenting the objective (a callback inside the "
        "JAX objective, a wrapper around scipy's); * marks gx Newton rows, where a callback would "
        "also fire inside Hessian products, so the solver's own count of value_and_grad calls is shown.",
        "",
        "Products: dense Hessians (gx newton, scipy trust-exact) or Hessian-vector products "
        "(gx newton-cg, scipy Newton-CG).",
        "",
        "| problem | n | dtype | solver | converged | grad evals | iterations | products | compile s | run s | Hessian PD |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['problem']} | {r['n']} | {r['dtype']} | {r['solver']} | error: {r['error'][:60]} | | | | | | |"
            )
            continue
        pd = "" if r["hessian_pd"] is None else ("yes" if r["hessian_pd"] else "NO")
        lines.append(
            f"| {r['problem']} | {r['n']} | {r['dtype']} | {r['solver']} | {'yes' if r['converged'] else 'NO'} | "
            f"{r['grad_evals']} | {r['iterations']} | {'' if r['products'] is None else r['products']} | "
            f"{r['compile_s']:.2f} | {r['run_s']:.4f} | {pd} |"
        )
    lines += ["", *bar_lines(rows)]
    args.out.mkdir(parents=True, exist_ok=True)
    name = "second_order_quick" if args.quick else "second_order"
    if wanted_problems or wanted_solvers:
        name += "_subset"
    (args.out / f"{name}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
