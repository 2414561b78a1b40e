"""Hessian analysis side by side: gradxform vs dense eigvalsh, PyHessian-style power
iteration and Hutchinson, and scipy's ARPACK ``eigsh``.

Problems: tanh MLPs on scikit-learn's digits (float64) at random init (indefinite)
and after training with ``gx.minimize`` (many near-zero eigenvalues), and a synthetic
power-law spectrum. Reports, per method: Hessian-vector products used, the worst
relative error of the top-5 / bottom-5 eigenvalues against dense ``eigvalsh``,
whether each method says it converged, the trace error at 60 products, the SLQ
density's Wasserstein-1 distance to the dense spectrum (relative to the spectral
width), and the cost of one HVP, Gauss-Newton, Fisher and empirical Fisher product in
gradient evaluations on a ~1M-parameter MLP. Writes ``benchmarks/results/hessian.{json,md}``.

    python benchmarks/hessian.py                   # everything
    python benchmarks/hessian.py --products-only   # the product costs only
    python benchmarks/hessian.py --budget-only     # Lanczos time against its budget only
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
import scipy.sparse.linalg
from jax.flatten_util import ravel_pytree

jax.config.update("jax_enable_x64", True)

import gradxform as gx  # noqa: E402
from gradxform import curvature  # noqa: E402

H = gx.hessian


def digits_mlp(hidden: int, n_samples: int = 300, seed: int = 0, l2: float = 0.0):
    from sklearn.datasets import load_digits

    data = load_digits()
    X = jnp.asarray(data.data[:n_samples] / 16.0)
    Y = jnp.asarray(np.eye(10)[data.target[:n_samples]])

    def loss(p):
        h = jnp.tanh(X @ p["w1"] + p["b1"])
        logits = h @ p["w2"] + p["b2"]
        data_loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.sum(logits * Y, axis=1))
        return data_loss + l2 * sum(jnp.sum(a**2) for a in jax.tree.leaves(p))

    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    params = {
        "w1": jax.random.normal(k1, (64, hidden)) / 8.0,
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, 10)) / np.sqrt(hidden),
        "b2": jnp.zeros(10),
    }
    return loss, params


def power_law(n=2000, exponent=2.0, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    lam = 1.0 / np.arange(1, n + 1) ** exponent
    A = jnp.asarray((q * lam) @ q.T)
    return H.FlatOperator(lambda v: A @ v, n, jnp.float64, lambda v: v), np.asarray(A)


def rel_err(got, want):
    got, want = np.asarray(got), np.asarray(want)
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-300)))


def norm_err(got, want, lam):
    """The largest error relative to the spectral norm |H| (the scale eigvalsh is accurate to)."""
    return float(np.max(np.abs(np.asarray(got) - np.asarray(want))) / np.abs(lam).max())


def reference_floor(loss, params, lam_fwd):
    """How far the dense reference itself is from another exact-arithmetic-equal Hessian:
    ``lam_fwd``, the eigenvalues of jax.hessian (forward-over-reverse), vs those of the
    reverse-over-reverse Hessian. Below this, disagreement with eigvalsh is
    floating-point noise of the Hessian, not error."""
    flat, unravel = ravel_pytree(params)
    f = lambda x: loss(unravel(x))  # noqa: E731
    rev = np.asarray(jax.jit(jax.jacrev(jax.grad(f)))(flat))
    lam_rev = np.linalg.eigvalsh((rev + rev.T) / 2)
    ends = np.r_[lam_fwd[:5], lam_fwd[-5:]]
    ends_rev = np.r_[lam_rev[:5], lam_rev[-5:]]
    return rel_err(ends_rev, ends), norm_err(ends_rev, ends, lam_fwd)


def power_iteration(matvec, n, max_iters=1000, rel=1e-3, seed=0):
    """PyHessian's top eigenvalue: power iteration stopped at relative change < 1e-3."""
    v = np.random.default_rng(seed).normal(size=n)
    v /= np.linalg.norm(v)
    value = None
    for i in range(1, max_iters + 1):
        w = np.asarray(matvec(jnp.asarray(v)))
        new = float(v @ w)
        v = w / np.linalg.norm(w)
        if value is not None and abs(new - value) / (abs(value) + 1e-6) < rel:
            return new, i
        value = new
    return value, max_iters


def hutchinson_pyhessian(matvec, n, num=60, seed=0):
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(num):
        z = rng.choice([-1.0, 1.0], size=n)
        samples.append(float(z @ np.asarray(matvec(jnp.asarray(z)))))
    return float(np.mean(samples))


def wasserstein1(nodes, weights, eigenvalues):
    grid = np.sort(np.concatenate([nodes, eigenvalues]))
    order = np.argsort(nodes)
    cdf_a = np.searchsorted(np.asarray(nodes)[order], grid, side="right")
    cum = np.concatenate([[0.0], np.cumsum(np.asarray(weights)[order])])
    cdf_a = cum[cdf_a]
    cdf_b = np.searchsorted(np.sort(eigenvalues), grid, side="right") / len(eigenvalues)
    return float(np.sum(np.abs(cdf_a - cdf_b)[:-1] * np.diff(grid)))


def analyse(name, op, lam, rows, budget=60):
    """Every method on one operator; lam is the dense spectrum (ascending)."""
    top, bottom = lam[::-1][:5], lam[:5]
    for which, want in (("top", top), ("bottom", bottom)):
        for max_matvecs in (budget, 400):
            start = time.perf_counter()
            pairs = H.eigenpairs(op, k=5, which=which, tol=1e-10, max_matvecs=max_matvecs)
            jax.block_until_ready(pairs.values)
            seconds = time.perf_counter() - start
            rows.append(
                dict(
                    problem=name,
                    n=op.size,
                    task=f"{which}-5 eigenvalues",
                    method=f"gx lanczos (budget {max_matvecs})",
                    matvecs=int(pairs.num_matvecs),
                    rel_error=rel_err(pairs.values, want),
                    norm_error=norm_err(pairs.values, want, lam),
                    says_converged=f"{int(pairs.converged.sum())}/5",
                    seconds=seconds,
                )
            )
        # every Krylov method with `budget` products from one start works in the same
        # `budget`-dimensional Krylov space, where Lanczos' Ritz values are the
        # Rayleigh-Ritz optimum: its error over several random starts is the floor
        errors = []
        for seed in range(1, 6):
            pairs = H.eigenpairs(
                op, k=5, which=which, tol=1e-300, max_matvecs=budget, key=jax.random.PRNGKey(seed)
            )
            errors.append(norm_err(pairs.values, want, lam))
        rows.append(
            dict(
                problem=name,
                n=op.size,
                task=f"{which}-5 eigenvalues",
                method=f"Krylov optimum, {budget} products (5 random starts, median)",
                matvecs=budget,
                norm_error=float(np.median(errors)),
            )
        )
        counter = {"n": 0}

        def counted(v, counter=counter):
            counter["n"] += 1
            return np.asarray(op.matvec(jnp.asarray(v.ravel())))

        linop = scipy.sparse.linalg.LinearOperator(
            (op.size, op.size), matvec=counted, dtype=np.float64
        )
        try:
            vals = scipy.sparse.linalg.eigsh(
                linop,
                k=5,
                which="LA" if which == "top" else "SA",
                maxiter=3000,
                tol=1e-10,
                return_eigenvectors=False,
            )
            vals = np.sort(vals)[::-1] if which == "top" else np.sort(vals)
            error, found = rel_err(vals, want), 5
            error_norm = norm_err(vals, want, lam)
        except scipy.sparse.linalg.ArpackNoConvergence as err:
            error, found, error_norm = None, len(err.eigenvalues), None
        rows.append(
            dict(
                problem=name,
                n=op.size,
                task=f"{which}-5 eigenvalues",
                method="scipy eigsh (ARPACK)",
                matvecs=counter["n"],
                rel_error=error,
                norm_error=error_norm,
                says_converged=f"{found}/5",
            )
        )
    value, iters = power_iteration(op.matvec, op.size)
    rows.append(
        dict(
            problem=name,
            n=op.size,
            task="top eigenvalue",
            method="PyHessian-style power iteration",
            matvecs=iters,
            rel_error=rel_err([value], [lam[-1]]) if lam[-1] != 0 else None,
            norm_error=norm_err([value], [lam[-1]], lam),
            says_converged="1/1",
        )
    )
    exact = float(np.sum(lam))
    for method in ("hutch++", "hutchinson"):
        est = H.trace(op, num_matvecs=budget, method=method)
        rows.append(
            dict(
                problem=name,
                n=op.size,
                task="trace",
                method=f"gx {method}",
                matvecs=budget,
                rel_error=abs(float(est.estimate) - exact) / abs(exact),
                stderr=float(est.stderr),
            )
        )
    rows.append(
        dict(
            problem=name,
            n=op.size,
            task="trace",
            method="PyHessian-style Hutchinson",
            matvecs=budget,
            rel_error=abs(hutchinson_pyhessian(op.matvec, op.size, budget) - exact) / abs(exact),
        )
    )
    sd = H.spectral_density(op, num_probes=4, steps=40)
    w1 = wasserstein1(np.asarray(sd.nodes), np.asarray(sd.weights), lam) / (lam[-1] - lam[0])
    rows.append(
        dict(
            problem=name,
            n=op.size,
            task="SLQ density W1 / width",
            method="gx spectral_density (4 x 40)",
            matvecs=160,
            rel_error=w1,
        )
    )


def product_costs(hidden=1000, repeats=20):
    """Curvature-product time / gradient time on an MLP with ~1M parameters (64 -> hidden -> hidden -> 10).

    Softmax cross-entropy on 256 digits, float32. ``hvp`` is one product from
    scratch; every other row is the cost per product of many products at one
    point (built once, then 10 more products in a ``fori_loop``), as the
    spectral tools and CG use them. Ratios are medians over rounds of
    interleaved timings (:func:`interleaved`).
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    X = jnp.asarray(data.data[:256] / 16.0, jnp.float32)
    Y = jnp.asarray(np.eye(10)[data.target[:256]], jnp.float32)
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    p = {
        "w1": jax.random.normal(k[0], (64, hidden)) / 8,
        "w2": jax.random.normal(k[1], (hidden, hidden)) / np.sqrt(hidden),
        "w3": jax.random.normal(k[2], (hidden, 10)) / np.sqrt(hidden),
    }
    p = jax.tree.map(lambda a: a.astype(jnp.float32), p)

    def model(p, x):
        return jnp.tanh(jnp.tanh(x @ p["w1"]) @ p["w2"]) @ p["w3"]

    def cross_entropy(logits, y):
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.sum(logits * y, axis=1))

    def loss(p):
        return cross_entropy(model(p, X), Y)

    def products(build, count):
        """``count`` products of ``build(p)`` (built once) in one compiled loop."""

        def run(p, v):
            matvec = build(p)
            return jax.lax.fori_loop(0, count, lambda i, u: matvec(u), v)

        return jax.jit(run)

    v = jax.tree.map(lambda a: a / jnp.linalg.norm(a), p)  # keep repeated products finite
    builders = {
        "gx linearized_hvp (per product)": lambda p: H.linearized_hvp(loss, p),
        "gx gauss_newton_product (per product)": lambda p: curvature.gauss_newton_product(
            model, cross_entropy, p, X, Y
        ),
        "gx fisher_product, categorical (per product)": lambda p: curvature.fisher_product(
            model, p, X
        ),
        "gx empirical_fisher_product (per product)": (
            lambda p: curvature.empirical_fisher_product(model, cross_entropy, p, X, Y)
        ),
    }
    grad, hvp = jax.jit(jax.grad(loss)), jax.jit(lambda p, v: H.hvp(loss, p, v))
    calls = {"grad": lambda: grad(p), "gx hvp (one product)": lambda: hvp(p, v)}
    for name, build in builders.items():
        one, eleven = products(build, 1), products(build, 11)
        calls[name + " 1"] = lambda one=one: one(p, v)
        calls[name + " 11"] = lambda eleven=eleven: eleven(p, v)
    seconds = interleaved(calls, repeats)
    per_round = {"gx hvp (one product)": seconds["gx hvp (one product)"]}
    for name in builders:  # (11 products - 1 product) / 10, round by round
        per_round[name] = (seconds[name + " 11"] - seconds[name + " 1"]) / 10
    n = sum(a.size for a in jax.tree.leaves(p))
    grad_s = seconds["grad"]
    return (
        n,
        float(np.median(grad_s)),
        {
            name: (float(np.median(t)), float(np.median(t / grad_s)))
            for name, t in per_round.items()
        },
    )


def interleaved(calls, repeats):
    """``{name: (repeats,) seconds}``, each round timing every call once in turn.

    Interleaving keeps the ratios of calls in one round comparable when the
    machine's load drifts between rounds.
    """
    for fn in calls.values():
        jax.block_until_ready(fn())  # compile and warm up
    seconds = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            seconds[name].append(time.perf_counter() - t)
    return {name: np.asarray(t) for name, t in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results"
    )
    parser.add_argument(
        "--products-only",
        action="store_true",
        help="only the curvature-product cost rows (skips the spectra)",
    )
    parser.add_argument(
        "--budget-only",
        action="store_true",
        help="only the Lanczos time at budgets 400 and 4,000 (written to hessian_budget.md)",
    )
    args = parser.parse_args()
    if args.budget_only:
        write_budget(budget_rows(), args.out)
        return
    rows = [] if args.products_only else spectral_rows()
    rows.extend(product_cost_rows())
    write(rows, args.out)


def budget_rows(budgets=(400, 4000), repeats=5):
    """Lanczos time at two budgets that stop at the same point: cost must follow the
    products used, not ``max_matvecs``. Each call is compiled once (the first call's time
    is reported), then the budgets are timed interleaved (:func:`interleaved`), so the
    ratio of their medians holds on a loaded machine."""
    n = 4000
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(n, n)))
    spectrum = np.r_[0.1, 0.2, 0.3, 0.4, 0.5, np.linspace(1.0, 10.0, n - 5)]
    A = jnp.asarray((q * spectrum) @ q.T)
    problems = {
        f"quadratic, n = {n}, spectrum 0.1..0.5 then [1, 10]": H.FlatOperator(
            lambda v: A @ v, n, jnp.float64, lambda v: v
        ),
    }
    loss, params = digits_mlp(64)
    problems["digits MLP 64-64-10, random init"] = H.flat_operator(loss, params)
    rows = []
    key = jax.random.PRNGKey(0)
    for name, op in problems.items():
        calls, first, pairs = {}, {}, {}
        for budget in budgets:
            run = jax.jit(
                lambda key, op=op, budget=budget: H.eigenpairs(
                    op, k=5, which="bottom", max_matvecs=budget, key=key
                )
            )
            start = time.perf_counter()
            pairs[budget] = jax.block_until_ready(run(key))
            first[budget] = time.perf_counter() - start
            calls[budget] = lambda run=run: run(key)
        seconds = interleaved(calls, repeats)
        for budget in budgets:
            rows.append(
                dict(
                    problem=name,
                    n=op.size,
                    budget=budget,
                    matvecs=int(pairs[budget].num_matvecs),
                    converged=f"{int(pairs[budget].converged.sum())}/5",
                    first_s=first[budget],
                    warm_s=float(np.median(seconds[budget])),
                    ratio=float(np.median(seconds[budget] / seconds[budgets[0]])),
                )
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def write_budget(rows, out):
    lines = [
        "| problem | n | budget | HVPs used | converged | first call (s, with compile) "
        "| warm call (s, median of 5) | time / budget-400 time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['problem']} | {r['n']} | {r['budget']} | {r['matvecs']} | {r['converged']} "
            f"| {r['first_s']:.2f} | {r['warm_s']:.3f} | {r['ratio']:.2f} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "hessian_budget.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def spectral_rows():
    """Eigenvalue, trace, density and classification rows at the digits MLPs and a power law."""
    rows = []
    for hidden, l2 in ((8, 0.0), (64, 0.0), (64, 1e-4)):
        loss, params = digits_mlp(hidden, l2=l2)
        tag = f"digits MLP 64-{hidden}-10" + (f", L2 {l2:g}" if l2 else "")
        points = {"random init": params}
        points["trained"] = gx.minimize(loss, params, tol=1e-8, maxiter=3000).params
        for where, p in points.items():
            if l2 and where == "random init":
                continue  # the same point as without L2, up to a 2 l2 I shift
            name = f"{tag}, {where}"
            lam = np.linalg.eigvalsh(np.asarray(H.hessian_matrix(loss, p)))
            analyse(name, H.flat_operator(loss, p), lam, rows)
            floor_rel, floor_norm = reference_floor(loss, p, lam)
            rows.append(
                dict(
                    problem=name,
                    n=lam.size,
                    task="reference floor",
                    method="eigvalsh: forward-over-reverse vs reverse-over-reverse Hessian",
                    matvecs=None,
                    rel_error=floor_rel,
                    norm_error=floor_norm,
                    spectral_norm=float(np.abs(lam).max()),
                )
            )
            if where == "trained":
                verdicts = {
                    m: H.classify_critical_point(loss, p, grad_tol=1e-6, method=m).verdict
                    for m in ("dense", "lanczos")
                }
                rows.append(
                    dict(
                        problem=name,
                        n=lam.size,
                        task="classification",
                        method="gx classify_critical_point",
                        verdict=verdicts,
                        near_zero_negative=int(np.sum((lam < 0) & (lam > -1e-9))),
                    )
                )
    op, A = power_law()
    analyse("power-law spectrum 1/i^2", op, np.linalg.eigvalsh(A), rows)
    return rows


def product_cost_rows():
    n, g_time, times = product_costs()
    rows = []
    for method, (t, ratio) in times.items():
        rows.append(
            dict(
                problem=f"MLP 64-1000-1000-10 ({n:,} params, float32)",
                task="product cost",
                method=method,
                grad_ms=1e3 * g_time,
                product_ms=1e3 * t,
                ratio=ratio,
            )
        )
    return rows


def write(rows, out):
    for r in rows:
        print(json.dumps(r))
    machine = f"{platform.machine()}, {jax.devices()[0].device_kind}, jax {jax.__version__}, scipy {scipy.__version__}"
    lines = [
        f"# Hessian analysis\n\nMachine: {machine}.\n",
        "Errors against dense `eigvalsh`: *rel.* is the largest |error| / |eigenvalue|, "
        "*/ |H|* the largest |error| / spectral norm (the scale a backward-stable eigensolver, "
        "eigvalsh included, is accurate to). The *reference floor* rows compare eigvalsh of two "
        "Hessians that are equal in exact arithmetic (forward-over-reverse and reverse-over-reverse "
        "AD): differences below it are the floating-point noise of the Hessian itself. The "
        "*Krylov optimum* rows are Lanczos run to the full budget from 5 other random starts: "
        "every method using that many products from one start vector works in that Krylov space, "
        "where Lanczos' Ritz values are the Rayleigh-Ritz optimum.",
        "",
        "| problem | n | task | method | HVPs | rel. error | error / \\|H\\| | converged (says) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["task"] == "product cost":
            lines.append(
                f"| {r['problem']} | | product / gradient time | {r['method']} | | {r['ratio']:.2f} ({r['product_ms']:.1f} ms / {r['grad_ms']:.1f} ms) | | |"
            )
        elif r["task"] == "classification":
            lines.append(
                f"| {r['problem']} | {r['n']} | classification | {r['method']} | | {r['verdict']} ({r['near_zero_negative']} eigenvalues in [-1e-9, 0)) | | |"
            )
        else:
            err = "n/a" if r.get("rel_error") is None else f"{r['rel_error']:.2e}"
            nerr = "" if r.get("norm_error") is None else f"{r['norm_error']:.2e}"
            hvps = "" if r.get("matvecs") is None else r["matvecs"]
            if r["task"] == "reference floor":
                nerr += f" (\\|H\\| = {r['spectral_norm']:.3g})"
            lines.append(
                f"| {r['problem']} | {r['n']} | {r['task']} | {r['method']} | {hvps} | {err} | {nerr} | {r.get('says_converged', '')} |"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "hessian.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    (out / "hessian.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
