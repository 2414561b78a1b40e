"""The main demo: one small MLP on scikit-learn's digits, trained by each optimizer.

``python -m gradxform demo`` (or the ``gradxform`` console script) trains the
same network from the same initialisation with SGD, momentum (in both its
heavy-ball form, :func:`gradxform.sgd`, and its velocity form,
:func:`gradxform.sgd_velocity`), Nesterov, AdaGrad, RMSProp, Adam, AdamW,
AMSGrad, NAdam (each one jitted ``lax.scan`` over minibatch steps) and
full-batch L-BFGS, prints a table, analyses the Hessian at the Adam solution
(top eigenvalues with certificates, Hutch++ trace, verdict) and writes PNG
figures (loss curves, spectrum). ``gradxform demo --help`` lists the flags.
A recorded run is in ``docs/results/demo.md``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx


class Digits(NamedTuple):
    """The digits data, split into a training and a test set.

    Attributes:
        x_train: ``(n_train, 64)`` float32 pixel intensities in [0, 1].
        y_train: ``(n_train,)`` int32 labels 0-9.
        x_test: ``(n_test, 64)`` float32 pixel intensities.
        y_test: ``(n_test,)`` int32 labels.
    """

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Digits:
    """The 1,797 8x8 digit images that ship inside scikit-learn, scaled to [0, 1].

    Args:
        test_fraction: the share of images held out for testing.
        seed: seeds the random split.

    Returns:
        The :class:`Digits` split, as JAX arrays.

    Raises:
        SystemExit: if scikit-learn (the ``demo`` extra) is not installed.
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise SystemExit(
            "the demo needs scikit-learn's bundled digits data: pip install 'gradxform[demo]'"
        ) from err
    data = sk_load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Digits(*(jnp.asarray(a) for a in (x[train], y[train], x[test], y[test])))


def init_mlp(key: jax.Array, sizes=(64, 64, 10)) -> dict:
    """Glorot-uniform weights and zero biases for an MLP with the given layer sizes.

    Args:
        key: a JAX PRNG key.
        sizes: the layer widths, input first.

    Returns:
        ``{"layer<i>": {"w": (n_in, n_out), "b": (n_out,)}}`` in float32.
    """
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, sub = jax.random.split(key)
        limit = np.sqrt(6.0 / (n_in + n_out))
        params[f"layer{i}"] = {
            "w": jax.random.uniform(sub, (n_in, n_out), jnp.float32, -limit, limit),
            "b": jnp.zeros(n_out, jnp.float32),
        }
    return params


def mlp(params: dict, x: jax.Array) -> jax.Array:
    """Logits of a tanh MLP.

    Args:
        params: weights as made by :func:`init_mlp`.
        x: ``(batch, 64)`` inputs.

    Returns:
        ``(batch, 10)`` logits (no activation after the last layer).
    """
    layers = [params[k] for k in sorted(params)]
    for layer in layers[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def softmax_cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    r"""Mean cross-entropy of integer labels ``y`` under ``softmax(logits)``.

    :math:`\frac{1}{N} \sum_i \left(\log \sum_k e^{z_{ik}} - z_{i y_i}\right)`.

    Args:
        logits: ``(N, K)`` logits :math:`z`.
        y: ``(N,)`` integer labels.

    Returns:
        A scalar.
    """
    return jnp.mean(
        jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0]
    )


def cross_entropy(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """The training objective: mean cross-entropy of the MLP on ``(x, y)``.

    Args:
        params: MLP weights.
        x: inputs.
        y: integer labels.

    Returns:
        A scalar.
    """
    return softmax_cross_entropy(mlp(params, x), y)


def accuracy(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """The fraction of ``x`` the MLP labels correctly.

    Args:
        params: MLP weights.
        x: inputs.
        y: integer labels.

    Returns:
        A scalar in [0, 1].
    """
    return jnp.mean(jnp.argmax(mlp(params, x), axis=-1) == y)


def make_train(tx: gx.GradientTransformation, data: Digits, steps: int, batch_size: int):
    """A jitted ``(params, key) -> (params, losses)`` running ``steps`` minibatch updates.

    Args:
        tx: the optimizer.
        data: the training data.
        steps: the number of updates (one ``lax.scan``).
        batch_size: examples per minibatch, drawn without replacement each step.

    Returns:
        The jitted training function; ``losses`` holds each step's minibatch loss.
    """
    n = data.x_train.shape[0]

    def step(carry, key):
        params, state = carry
        idx = jax.random.choice(key, n, (batch_size,), replace=False)
        loss, grads = jax.value_and_grad(cross_entropy)(
            params, data.x_train[idx], data.y_train[idx]
        )
        updates, state = tx.update(grads, state, params)
        return (gx.apply_updates(params, updates), state), loss

    @jax.jit
    def train(params, key):
        keys = jax.random.split(key, steps)
        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), keys)
        return params, losses

    return train


def make_full_batch_train(tx: gx.GradientTransformation, data: Digits, steps: int):
    """Like :func:`make_train`, full batch, for line-search methods (L-BFGS).

    The loss recorded at each step is the full training loss before the update.
    ``update`` receives ``value``, ``grad`` and ``value_fn``, as line searches need.

    Args:
        tx: the optimizer.
        data: the training data.
        steps: the number of updates.

    Returns:
        The jitted function ``(params, key) -> (params, losses)`` (``key`` unused).
    """

    def loss_fn(params):
        return cross_entropy(params, data.x_train, data.y_train)

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params, value=loss, grad=grads, value_fn=loss_fn)
        return (gx.apply_updates(params, updates), state), loss

    @jax.jit
    def train(params, key):
        del key
        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
        return params, losses

    return train


# name on the command line -> (label, factory, full batch?)
OPTIMIZERS = {
    "sgd": ("SGD", lambda: gx.sgd(0.5), False),
    "momentum": ("SGD+Momentum", lambda: gx.sgd(0.05, momentum=0.9), False),
    "velocity": ("Momentum (velocity form)", lambda: gx.sgd_velocity(0.05, momentum=0.9), False),
    "nesterov": ("Nesterov", lambda: gx.sgd(0.05, momentum=0.9, nesterov=True), False),
    "adagrad": ("AdaGrad", lambda: gx.adagrad(0.1), False),
    "rmsprop": ("RMSProp", lambda: gx.rmsprop(3e-3), False),
    "adam": ("Adam", lambda: gx.adam(3e-3), False),
    "adamw": ("AdamW", lambda: gx.adamw(3e-3, weight_decay=1e-2), False),
    "amsgrad": ("AMSGrad", lambda: gx.amsgrad(3e-3), False),
    "nadam": ("NAdam", lambda: gx.nadam(3e-3), False),
    "lbfgs": ("L-BFGS (full batch)", lambda: gx.lbfgs(), True),
}


def optimizers() -> dict[str, gx.GradientTransformation]:
    """The optimizers the demo compares, with the rates it uses for this problem.

    Returns:
        ``{label: transform}``, in the order of the table.
    """
    return {label: make() for label, make, _ in OPTIMIZERS.values()}


def _progress(done: int, total: int, label: str) -> None:
    width = 24
    filled = width * done // total
    bar = "#" * filled + "." * (width - filled)
    end = "\n" if done == total else ""
    print(f"\r[{bar}] {done}/{total} {label:<28}", end=end, file=sys.stderr, flush=True)


# run()'s compiled training functions, by (name, steps, batch_size, seed): everything they
# close over (the data split, the optimizer) follows from those, so a second run() in the
# same process (the tests make several) reuses the executables instead of compiling again
_COMPILED: dict[tuple[str, int, int, int], Any] = {}


def run(
    steps: int = 300,
    batch_size: int = 128,
    seed: int = 0,
    names: list[str] | None = None,
    progress: bool = False,
) -> list[dict]:
    """Trains each named optimizer from the same start; returns one result row each.

    Args:
        steps: updates per optimizer.
        batch_size: minibatch size (ignored by full-batch methods).
        seed: seeds the data split, the initialisation and the minibatches.
        names: keys of ``OPTIMIZERS`` to run (default: all).
        progress: draw a progress bar on stderr.

    Returns:
        One dict per optimizer with ``name``, ``optimizer`` (its label),
        ``steps``, ``train_loss`` (full training set), ``test_accuracy``,
        ``compile_seconds`` (~0 where this process compiled the same setting
        before), ``run_seconds``, ``seconds`` (both), ``losses``
        (per step) and the final ``params``.
    """
    names = list(OPTIMIZERS) if names is None else names
    data = load_digits(seed=seed)
    params0 = init_mlp(jax.random.PRNGKey(seed))
    key = jax.random.PRNGKey(seed + 1)
    rows = []
    for i, name in enumerate(names):
        label, make, full_batch = OPTIMIZERS[name]
        if progress:
            _progress(i, len(names), label)
        start = time.perf_counter()
        setting = (name, steps, batch_size, seed)
        if setting not in _COMPILED:
            train = (
                make_full_batch_train(make(), data, steps)
                if full_batch
                else make_train(make(), data, steps, batch_size)
            )
            _COMPILED[setting] = train.lower(params0, key).compile()
        compiled = _COMPILED[setting]
        compiled_at = time.perf_counter()
        params, losses = jax.block_until_ready(compiled(params0, key))
        finished = time.perf_counter()
        rows.append(
            {
                "name": name,
                "optimizer": label,
                "steps": steps,
                "train_loss": float(cross_entropy(params, data.x_train, data.y_train)),
                "test_accuracy": float(accuracy(params, data.x_test, data.y_test)),
                "compile_seconds": compiled_at - start,
                "run_seconds": finished - compiled_at,
                "seconds": finished - start,
                "losses": np.asarray(losses),
                "params": params,
            }
        )
    if progress:
        _progress(len(names), len(names), "done")
    return rows


def analyse_hessian(params: dict, data: Digits, seed: int = 0) -> dict:
    """Top eigenvalues, trace, spectral density and a verdict at ``params`` (full training loss).

    Args:
        params: MLP weights (the point to analyse).
        data: the data whose training loss is analysed.
        seed: seeds the random start vectors and probes.

    Returns:
        A dict with ``num_params``, ``top_eigenvalues``, ``top_residuals``,
        ``top_converged``, ``top_hvps``, ``trace``, ``trace_stderr``, ``density``
        (a :class:`~gradxform.hessian.SpectralDensity`) and ``critical_point``
        (a :class:`~gradxform.hessian.CriticalPoint`).
    """

    def loss(p):
        return cross_entropy(p, data.x_train, data.y_train)

    key = jax.random.PRNGKey(seed)
    top = gx.hessian.hessian_eigenpairs(loss, params, k=5, which="top", max_matvecs=80, key=key)
    trace = gx.hessian.trace(loss, params, num_matvecs=60, key=key)
    density = gx.hessian.spectral_density(loss, params, num_probes=4, steps=40, key=key)
    point = gx.hessian.classify_critical_point(loss, params, grad_tol=1e-3, k=5, max_matvecs=80)
    return {
        "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
        "top_eigenvalues": np.asarray(top.values),
        "top_residuals": np.asarray(top.residuals),
        "top_converged": np.asarray(top.converged),
        "top_hvps": int(top.num_matvecs),
        "trace": float(trace.estimate),
        "trace_stderr": float(trace.stderr),
        "density": density,
        "critical_point": point,
    }


def format_table(rows: list[dict]) -> str:
    """The results table the demo prints.

    Args:
        rows: as returned by :func:`run`.

    Returns:
        The table as text: one line per optimizer.
    """
    header = (
        f"{'optimizer':<26} {'train loss':>10} {'test acc':>9} {'steps':>6} "
        f"{'wall (s)':>9} {'ms/step':>8}"
    )
    lines = [
        "MLP 64-64-10 on scikit-learn digits; wall = compile + run, ms/step = run only; "
        f"backend {jax.default_backend()}",
        header,
        "-" * len(header),
    ]
    for r in rows:
        per_step = 1e3 * r["run_seconds"] / r["steps"]
        lines.append(
            f"{r['optimizer']:<26} {r['train_loss']:>10.4g} {r['test_accuracy']:>9.3f} "
            f"{r['steps']:>6} {r['seconds']:>9.2f} {per_step:>8.3f}"
        )
    return "\n".join(lines)


def format_hessian(report: dict) -> str:
    """The Hessian report the demo prints.

    Args:
        report: as returned by :func:`analyse_hessian`.

    Returns:
        The report as text.
    """
    point = report["critical_point"]
    top = ", ".join(f"{v:.4g}" for v in report["top_eigenvalues"])
    return "\n".join(
        [
            f"Hessian of the full training loss at the Adam solution "
            f"({report['num_params']:,} parameters, matrix-free):",
            f"  top-5 eigenvalues  {top}",
            f"    certified to     {float(np.max(report['top_residuals'])):.1e} "
            f"({int(np.sum(report['top_converged']))}/5 converged, {report['top_hvps']} HVPs)",
            f"  trace (Hutch++)    {report['trace']:.4g} +- {report['trace_stderr']:.2g}",
            f"  verdict            {point.verdict} (|grad| = {point.grad_norm:.3g}, "
            f"lambda_min = {point.lambda_min:.3g}, lambda_max = {point.lambda_max:.3g})",
        ]
    )


def _loss_curve(row: dict, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The steps and losses one panel draws: a trailing mean of ``window`` minibatch losses."""
    losses = np.asarray(row["losses"], np.float64)
    if OPTIMIZERS[row["name"]][2]:  # full batch: the loss itself, no noise to average
        return np.arange(1, len(losses) + 1), losses
    return np.arange(window, len(losses) + 1), np.convolve(
        losses, np.ones(window) / window, "valid"
    )


def _positive_range(curves: list[np.ndarray]) -> tuple[float, float]:
    values = np.concatenate(curves)
    values = values[np.isfinite(values) & (values > 0)]
    return (float(values.min()), float(values.max())) if values.size else (1e-3, 1.0)


def _leaves_note(x: np.ndarray, y: np.ndarray, first_below: int) -> str:
    zero = np.flatnonzero(y == 0)
    note = f"below the axis from step {x[first_below]}"
    return note + (f",\n0 (float32) from step {x[zero[0]]}" if zero.size else "")


def loss_figure(rows: list[dict]):
    """The loss curves: one panel per optimizer, the others in light grey behind it.

    Minibatch losses are drawn as a trailing mean over ``min(20, steps // 10)``
    steps (the title says how many); full-batch L-BFGS's loss as it is. The
    y-axis (log scale, shared) runs from the data: up to the highest curve,
    down to the lowest minibatch curve, and a curve that leaves it at the
    bottom (full-batch L-BFGS reaches float32 zero) says from which step.

    Args:
        rows: as returned by :func:`run`.

    Returns:
        The matplotlib ``Figure`` (Agg backend); the caller saves and closes it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = max(1, min(20, len(rows[0]["losses"]) // 10))
    curves = [_loss_curve(r, window) for r in rows]
    # the top from every curve, the bottom from the minibatch ones: full-batch L-BFGS
    # separates the data and its loss falls to float32 zero
    minibatch = [y for r, (_, y) in zip(rows, curves) if not OPTIMIZERS[r["name"]][2]]
    low, high = _positive_range(minibatch or [y for _, y in curves])
    high = max(high, _positive_range([y for _, y in curves])[1])
    cols = min(4, len(rows))
    nrows = -(-len(rows) // cols)
    fig, axes = plt.subplots(
        nrows,
        cols,
        figsize=(3.1 * cols, 2.3 * nrows + 0.9),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    bottom, top = low / 1.5, high * 1.3
    for ax, row, (x, y) in zip(axes.flat, rows, curves):
        for other_x, other_y in curves:
            ax.plot(other_x, other_y, color="0.82", lw=0.8)
        full_batch = OPTIMIZERS[row["name"]][2]
        ax.plot(x, y, color="black" if full_batch else "C0", lw=1.8)
        ax.set_title(f"{row['optimizer']}: {row['train_loss']:.3g}", fontsize=9)
        below = np.flatnonzero(y < bottom)
        if below.size:
            ax.text(0.97, 0.05, _leaves_note(x, y, below[0]), ha="right", va="bottom",
                    transform=ax.transAxes, fontsize=8)  # fmt: skip
    for ax in axes.flat[len(rows) :]:
        ax.axis("off")
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5) if bottom <= t <= top]
    axes[0, 0].set(yscale="log", ylim=(bottom, top))
    axes[0, 0].set_yticks(ticks, [f"{t:g}" for t in ticks])
    axes[0, 0].minorticks_off()
    fig.suptitle(
        "MLP 64-64-10 on digits, one panel per optimizer (grey: the others); title: final "
        f"training loss\nminibatch loss as a trailing mean over {window} steps"
        + ("; L-BFGS: full-batch loss" if len(minibatch) < len(rows) else ""),
        fontsize=10,
    )
    fig.supxlabel("step", fontsize=9)
    fig.supylabel("training loss (log scale)", fontsize=9)
    fig.tight_layout()
    return fig


def write_figures(rows: list[dict], report: dict | None, out: pathlib.Path) -> list[pathlib.Path]:
    """Loss curves (and the Hessian spectrum when ``report``) as PNG files in ``out``.

    ``loss_curves.png`` is :func:`loss_figure`.

    Args:
        rows: as returned by :func:`run`.
        report: as returned by :func:`analyse_hessian`, or None for no spectrum.
        out: the folder to write to (created if missing).

    Returns:
        The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "loss_curves.png"]
    fig = loss_figure(rows)
    fig.savefig(written[0], dpi=100)
    plt.close(fig)
    if report is not None:
        density = report["density"]
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot(np.asarray(density.grid), np.asarray(density.density), label="SLQ density")
        for v in report["top_eigenvalues"]:
            ax.axvline(float(v), color="C3", lw=0.8, ls="--")
        peak = float(np.max(np.asarray(density.density)))
        ax.set(
            xlabel="eigenvalue",
            ylabel="density",
            yscale="log",
            ylim=(1e-6 * peak, 2 * peak),  # the Gaussian tails fall to 1e-30 between nodes
            title="Hessian spectrum at the Adam solution (dashed: top-5 Lanczos)",
        )
        ax.legend()
        path = out / "hessian_spectrum.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """The ``gradxform`` command line: ``gradxform demo [--help]``.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status, 0.
    """
    parser = argparse.ArgumentParser(prog="gradxform", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="train an MLP on digits with every optimizer, then analyse its Hessian",
        description="Trains a 64-64-10 MLP on scikit-learn's digits with each optimizer "
        "(jitted lax.scan loops), prints a table, analyses the Hessian at the Adam "
        "solution and writes PNG figures.",
    )
    demo.add_argument(
        "--optimizers",
        default=",".join(OPTIMIZERS),
        help=f"comma-separated subset of: {', '.join(OPTIMIZERS)} (default: all)",
    )
    demo.add_argument("--steps", type=int, default=300, help="updates per optimizer (300)")
    demo.add_argument("--batch-size", type=int, default=128, help="minibatch size (128)")
    demo.add_argument("--seed", type=int, default=0, help="data split and init seed (0)")
    demo.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("gradxform-demo-output"),
        help="folder for the PNG figures (./gradxform-demo-output)",
    )
    demo.add_argument("--no-hessian", action="store_true", help="skip the Hessian analysis")
    demo.add_argument("--no-figures", action="store_true", help="write no figures")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be positive integers")
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown or not names:
        parser.error(f"--optimizers: unknown {unknown}; choose from {', '.join(OPTIMIZERS)}")
    rows = run(args.steps, args.batch_size, args.seed, names, progress=True)
    print(format_table(rows))
    report = None
    adam = next((r for r in rows if r["name"] == "adam"), None)
    if adam is not None and not args.no_hessian:
        report = analyse_hessian(adam["params"], load_digits(seed=args.seed), args.seed)
        print()
        print(format_hessian(report))
    if not args.no_figures:
        written = write_figures(rows, report, args.out)
        print()
        print("figures: " + ", ".join(str(p) for p in written))
    return 0
