"""Dense Levenberg-Marquardt at size: gx.least_squares(method="lm") against scipy's MINPACK lm.

A tanh regression ``r(x) = tanh(A x) - y`` with ``A`` of shape ``(m, n)`` (standard normal,
seed 0) and noisy targets; both solvers from zero with their defaults, float64. gx is timed on
its first call (compile included) and warm; scipy calls the same residual and ``jax.jacfwd``
Jacobian, jitted and warmed up first. The MGH table (benchmarks/least_squares.py) measures
evaluation counts on small problems; this one measures what a dense step costs at size.

Usage: ``python benchmarks/least_squares_size.py --m 4000 --n 100 --repeats 3``
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--m", type=int, default=4000)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import scipy.optimize

    jax.config.update("jax_enable_x64", True)
    import gradxform as gx

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(args.m, args.n)))
    y = jnp.tanh(a @ (0.3 * rng.normal(size=args.n))) + 0.01 * jnp.asarray(rng.normal(size=args.m))

    def residual(x):
        return jnp.tanh(a @ x) - y

    x0 = jnp.zeros(args.n)
    start = time.perf_counter()
    sol = jax.block_until_ready(gx.least_squares(residual, x0, method="lm"))
    first = time.perf_counter() - start
    warm = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        sol = jax.block_until_ready(gx.least_squares(residual, x0, method="lm"))
        warm.append(time.perf_counter() - start)

    fun, jac = jax.jit(residual), jax.jit(jax.jacfwd(residual))
    jax.block_until_ready((fun(x0), jac(x0)))
    ref_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ref = scipy.optimize.least_squares(
            lambda x: np.asarray(fun(x)),
            np.zeros(args.n),
            jac=lambda x: np.asarray(jac(x)),
            method="lm",
        )
        ref_times.append(time.perf_counter() - start)

    print(f"m={args.m} n={args.n}")
    print(
        f"gx lm     first {first:.2f} s, warm min {min(warm):.3f} s, nfev {int(sol.num_fun_evals)}, cost {float(sol.value):.10g}"
    )
    print(f"scipy lm  min {min(ref_times):.3f} s, nfev {ref.nfev}, cost {ref.cost:.10g}")


if __name__ == "__main__":
    main()
