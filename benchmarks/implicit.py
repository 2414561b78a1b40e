"""Implicit against unrolled differentiation of a solution: time and accuracy.

The hypergradient of a validation loss with respect to the L2 weight of a
logistic regression, ``d/d lam  L_val(w*(lam))``, computed

* implicitly: ``jax.grad`` through ``gx.minimize`` (L-BFGS to ``tol``), whose
  derivative is the implicit function theorem's solve with the Hessian
  (``implicit_diff="cg"`` and ``"dense"``);
* unrolled: ``jax.grad`` through a fixed number of steps of a differentiable
  solver written here (gradient descent with step ``1/L``, and Newton).

Accuracy is the relative error against the exact hypergradient
``-grad L_val^T H^-1 d grad f / d lam`` at a Newton-polished minimizer, with
a dense solve (float64). Times are medians of interleaved rounds, compile
excluded, single-threaded XLA on a shared 2-core box.

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        python benchmarks/implicit.py
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx

jax.config.update("jax_enable_x64", True)

OUT = pathlib.Path(__file__).parent / "results"


def loss(w, lam, x, y):
    return jnp.mean(jnp.logaddexp(0.0, -y * (x @ w))) + 0.5 * lam * jnp.sum(w**2)


def validation(w, x, y):
    return jnp.mean(jnp.logaddexp(0.0, -y * (x @ w)))


def data(n: int, m: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    beta = rng.normal(size=n)
    xs = rng.normal(size=(2 * m, n))
    ys = np.sign(xs @ beta + rng.normal(size=2 * m))
    return xs[:m], ys[:m], xs[m:], ys[m:]


def exact(lam, x, y, xv, yv):
    """The hypergradient at a minimizer polished by Newton steps, by a dense solve."""
    w = gx.minimize(loss, jnp.zeros(x.shape[1]), "newton", args=(lam, x, y), tol=1e-14).params
    hessian = jax.hessian(loss)(w, lam, x, y)
    mixed = jax.jacfwd(jax.grad(loss), argnums=1)(w, lam, x, y)
    return -jax.grad(validation)(w, xv, yv) @ jnp.linalg.solve(hessian, mixed)


def implicit(method: str, tol: float):
    def hypergradient(lam, x, y, xv, yv):
        def outer(lam):
            args = (lam, x, y)
            sol = gx.minimize(loss, jnp.zeros(x.shape[1]), args=args, tol=tol, implicit_diff=method)
            return validation(sol.params, xv, yv)

        return jax.grad(outer)(lam)

    return jax.jit(hypergradient)


def unrolled_gd(steps: int):
    def hypergradient(lam, x, y, xv, yv):
        lipschitz = 0.25 * jnp.linalg.norm(x, 2) ** 2 / x.shape[0] + lam

        def outer(lam):
            def step(w, _):
                return w - jax.grad(loss)(w, lam, x, y) / lipschitz, None

            w = jax.lax.scan(step, jnp.zeros(x.shape[1]), None, length=steps)[0]
            return validation(w, xv, yv)

        return jax.grad(outer)(lam)

    return jax.jit(hypergradient)


def unrolled_newton(steps: int):
    def hypergradient(lam, x, y, xv, yv):
        def outer(lam):
            def step(w, _):
                g, h = jax.grad(loss)(w, lam, x, y), jax.hessian(loss)(w, lam, x, y)
                return w - jnp.linalg.solve(h, g), None

            w = jax.lax.scan(step, jnp.zeros(x.shape[1]), None, length=steps)[0]
            return validation(w, xv, yv)

        return jax.grad(outer)(lam)

    return jax.jit(hypergradient)


def run(sizes, rounds: int, lam: float) -> list[dict]:
    rows = []
    for n, m in sizes:
        x, y, xv, yv = (jnp.asarray(a) for a in data(n, m))
        lam_ = jnp.asarray(lam)
        reference = float(exact(lam_, x, y, xv, yv))
        methods = {
            "implicit, CG (L-BFGS tol 1e-10)": implicit("cg", 1e-10),
            "implicit, dense (L-BFGS tol 1e-10)": implicit("dense", 1e-10),
            "implicit, CG (L-BFGS tol 1e-6)": implicit("cg", 1e-6),
            "unrolled gradient descent, 100 steps": unrolled_gd(100),
            "unrolled gradient descent, 1000 steps": unrolled_gd(1000),
            "unrolled Newton, 10 steps": unrolled_newton(10),
        }
        values = {k: float(f(lam_, x, y, xv, yv)) for k, f in methods.items()}  # compiles
        times: dict[str, list[float]] = {k: [] for k in methods}
        for _ in range(rounds):  # interleaved
            for k, f in methods.items():
                start = time.perf_counter()
                jax.block_until_ready(f(lam_, x, y, xv, yv))
                times[k].append(time.perf_counter() - start)
        for k in methods:
            rows.append(
                {
                    "n": n,
                    "m": m,
                    "method": k,
                    "ms": 1e3 * float(np.median(times[k])),
                    "rel_error": abs(values[k] - reference) / abs(reference),
                    "value": values[k],
                    "reference": reference,
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| n | m | hypergradient by | time (ms) | relative error |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['m']} | {r['method']} | {r['ms']:.2f} | {r['rel_error']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--lam", type=float, default=0.05)
    opts = parser.parse_args()
    rows = run([(10, 100), (50, 400), (200, 1000)], opts.rounds, opts.lam)
    OUT.mkdir(exist_ok=True)
    machine = f"{platform.machine()} {platform.processor() or ''} ({jax.devices()[0].platform})"
    (OUT / "implicit.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    text = f"Machine: {machine}, jax {jax.__version__}\n\n{table(rows)}\n"
    (OUT / "implicit.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
