"""Stochastic estimators: trace (Hutch++, Hutchinson), diagonal, spectral density (SLQ)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import checks
from gradxform.hessian import _vectors as V
from gradxform.hessian.lanczos import ritz_pairs, run
from gradxform.hessian.operators import on_hessian

__all__ = [
    "DiagonalEstimate",
    "SpectralDensity",
    "TraceEstimate",
    "diagonal",
    "spectral_density",
    "trace",
]


class TraceEstimate(NamedTuple):
    """An estimate of ``tr H`` with its standard error.

    Attributes:
        estimate: the estimate of ``tr H``.
        stderr: the standard error of its stochastic part.
        num_matvecs: Hessian-vector products used.
        finite: False when a Hessian-vector product came out NaN or infinite:
            the estimate is then meaningless and says so instead of being a
            silent NaN.
        nonfinite_batch: for a streamed
            :class:`~gradxform.hessian.DatasetObjective`, the index of the first
            batch whose product was NaN or infinite; None otherwise.
    """

    estimate: jax.Array
    stderr: jax.Array
    num_matvecs: int
    finite: jax.Array
    nonfinite_batch: int | None = None


def _trace_estimate(estimate, stderr, num_matvecs):
    finite = jnp.isfinite(estimate) & jnp.isfinite(stderr)
    return TraceEstimate(estimate, stderr, num_matvecs, finite)


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype)


_MIN_TRACE_MATVECS = {"hutch++": 3, "hutchinson": 2}


def trace(
    f: Any,
    params: Any = None,
    *,
    num_matvecs: int = 60,
    method: str = "hutch++",
    key: jax.Array | None = None,
) -> TraceEstimate:
    """Estimates ``tr H``, the trace of the Hessian of ``f`` at ``params``, from products.

    ``"hutchinson"`` averages ``z^T H z`` over Rademacher ``z`` (``E[z z^T] = I``,
    so ``E[z^T H z] = tr H``). ``"hutch++"`` (Meyer, Musco, Musco & Woodruff,
    2021; the default) spends a third of the products on a sketch ``Q =
    orth(H S)`` of the top of the spectrum, takes ``tr(Q^T H Q)`` exactly and
    Hutchinson's estimator on ``(I - Q Q^T) H (I - Q Q^T)``: on decaying spectra
    its error falls like ``1/m`` instead of ``1/sqrt(m)`` for ``m`` products.
    The products are batched (``vmap``), not looped in Python.

    Args:
        f: the objective ``f(params) -> scalar``, or a :class:`FlatOperator`.
        params: the point (unused for a :class:`FlatOperator`).
        num_matvecs: products to spend, at least 3 for ``"hutch++"`` and 2 for
            ``"hutchinson"``.
        method: ``"hutch++"`` or ``"hutchinson"``.
        key: PRNG key for the probes (default ``PRNGKey(0)``).

    Returns:
        A :class:`TraceEstimate`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> f = lambda p: 0.5 * jnp.sum(jnp.arange(1.0, 4.0) * p**2)  # tr H = 6
        >>> est = gx.hessian.trace(f, jnp.zeros(3), num_matvecs=9)
        >>> round(float(est.estimate), 4)
        6.0
    """
    checks.choice("method", method, ("hutch++", "hutchinson"))
    num_matvecs = checks.integer("num_matvecs", num_matvecs, minimum=_MIN_TRACE_MATVECS[method])
    return on_hessian(_trace, f, params, key, num_matvecs=num_matvecs, method=method)


def _trace(op: V.TreeOperator, key, *, num_matvecs, method):
    batched = jax.vmap(op.matvec)
    dtype = op.dtype
    if method == "hutchinson":
        Z = V.draw(_rademacher, key, op, (op.size, num_matvecs), 0)
        samples = V.row_dots(Z, _products(batched, Z, op), dtype)
        return _trace_estimate(
            jnp.mean(samples), jnp.std(samples, ddof=1) / jnp.sqrt(num_matvecs), num_matvecs
        )
    third = num_matvecs // 3
    k1, k2 = jax.random.split(key)
    S = V.draw(_rademacher, k1, op, (op.size, third), 0)
    Q = _orthonormal(_products(batched, S, op), op, k1)
    rest = num_matvecs - 2 * third
    G = V.draw(_rademacher, k2, op, (op.size, rest), 0)
    G = V.sub(G, V.combine(V.gram(Q, G), Q))
    # H Q and H G as one batch: one product program (one data pass for a streamed objective)
    QG = V.concatenate(Q, G)
    products = V.row_dots(QG, _products(batched, QG, op), dtype)
    exact, samples = jnp.sum(products[:third]), products[third:]
    return _trace_estimate(
        exact + jnp.mean(samples), jnp.std(samples, ddof=1) / jnp.sqrt(rest), num_matvecs
    )


def _products(batched, Z, op: V.TreeOperator):
    """``H z`` for every row of ``Z``, in the probes' dtype and sharded as the params."""
    out = batched(V.cast_like(Z, op.like))
    return V.constrain(V.cast(out, op.dtype), op.like, 1)


def _orthonormal(Y, op: V.TreeOperator, key):
    """Orthonormal rows spanning the rows of ``Y`` (classical Gram-Schmidt, twice).

    A row that is (numerically) in the span of the earlier ones is replaced by a
    random vector off that span, as a Householder QR completes its basis, so the
    rows are always orthonormal: Hutch++'s exact part then covers their whole span.
    """
    m = V.leading(Y)
    eps = jnp.finfo(op.dtype).eps

    def orthogonalise(Q, j, v):
        Qj = V.where_rows(jnp.arange(m) < j, Q)
        return V.project_out(Qj, V.project_out(Qj, v))

    def column(j, Q):
        v = V.row(Y, j)
        before = V.norm(v, op.dtype)
        v = orthogonalise(Q, j, v)
        after = V.norm(v, op.dtype)

        def fresh():
            draw = V.draw(jax.random.normal, jax.random.fold_in(key, j), op, (op.size,), 0)
            w = orthogonalise(Q, j, draw)
            return w, V.norm(draw, op.dtype), V.norm(w, op.dtype)

        def degenerate(before, after):
            return after <= op.size * eps * before

        v, before, after = jax.lax.cond(
            degenerate(before, after), fresh, lambda: (v, before, after)
        )
        # a fresh vector in the span too: the earlier rows span everything (n rows)
        unit = jnp.where(degenerate(before, after), 0, 1 / jnp.where(after > 0, after, 1))
        return V.set_row(Q, j, V.scale(unit, v))

    return jax.lax.fori_loop(0, m, column, V.stacked_zeros(op.like, m, op.dtype))


class DiagonalEstimate(NamedTuple):
    """An estimate of ``diag H`` with per-entry standard errors.

    Attributes:
        estimate: the estimate of ``diag H``, shaped like the params.
        stderr: its standard error per entry, shaped like the params.
        num_matvecs: Hessian-vector products used.
        finite: False when a product came out NaN or infinite.
        nonfinite_batch: for a streamed
            :class:`~gradxform.hessian.DatasetObjective`, the index of the first
            batch whose product was NaN or infinite; None otherwise.
    """

    estimate: object
    stderr: object
    num_matvecs: int
    finite: Any = True
    nonfinite_batch: int | None = None


def diagonal(
    f: Any, params: Any = None, *, num_matvecs: int = 60, key: jax.Array | None = None
) -> DiagonalEstimate:
    """Estimates ``diag H`` as the mean of ``z * (H z)`` over Rademacher ``z``.

    The estimator of Bekas, Kokiopoulou & Saad (2007): ``E[z_i (H z)_i] = H_ii``
    because ``E[z_i z_j] = delta_ij``.

    Args:
        f: the objective ``f(params) -> scalar``, or a :class:`FlatOperator`.
        params: the point (unused for a :class:`FlatOperator`).
        num_matvecs: products to spend (at least 2).
        key: PRNG key for the probes (default ``PRNGKey(0)``).

    Returns:
        A :class:`DiagonalEstimate`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> f = lambda p: 0.5 * jnp.sum(jnp.arange(1.0, 4.0) * p**2)  # H diagonal
        >>> gx.hessian.diagonal(f, jnp.zeros(3), num_matvecs=4).estimate
        Array([1., 2., 3.], dtype=float32)
    """
    num_matvecs = checks.integer("num_matvecs", num_matvecs, minimum=2)
    return on_hessian(_diagonal, f, params, key, num_matvecs=num_matvecs)


def _diagonal(op: V.TreeOperator, key, *, num_matvecs):
    Z = V.draw(_rademacher, key, op, (op.size, num_matvecs), 0)
    samples = jax.tree.map(jnp.multiply, Z, _products(jax.vmap(op.matvec), Z, op))
    estimate = jax.tree.map(lambda s: jnp.mean(s, axis=0), samples)
    stderr = jax.tree.map(lambda s: jnp.std(s, axis=0, ddof=1) / jnp.sqrt(num_matvecs), samples)
    finite = V.finite(samples)
    estimate, stderr = (op.output(V.cast_like(x, op.like)) for x in (estimate, stderr))
    return DiagonalEstimate(estimate, stderr, num_matvecs, finite)


class SpectralDensity(NamedTuple):
    """A spectral density estimate by stochastic Lanczos quadrature.

    Attributes:
        nodes, weights: the quadrature: ``(num_probes * steps,)`` Ritz values and
            weights summing to 1 (the spectral measure ``(1/n) sum_i delta(lambda_i)``).
        grid, density: the measure smoothed by a Gaussian of standard deviation
            ``kernel_width``, on ``grid``; ``density`` integrates to about 1.
        kernel_width: the Gaussian's standard deviation (default: 1% of the
            range of the nodes).
        finite: False when a product came out NaN or infinite.
        nonfinite_batch: for a streamed
            :class:`~gradxform.hessian.DatasetObjective`, the index of the first
            batch whose product was NaN or infinite; None otherwise.
    """

    nodes: jax.Array
    weights: jax.Array
    grid: jax.Array
    density: jax.Array
    kernel_width: jax.Array
    finite: Any = True
    nonfinite_batch: int | None = None


def spectral_density(
    f: Any,
    params: Any = None,
    *,
    num_probes: int = 4,
    steps: int = 30,
    grid_size: int = 500,
    kernel_width: float | None = None,
    key: jax.Array | None = None,
) -> SpectralDensity:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature (Lin, Saad & Yang 2016).

    Each of ``num_probes`` Rademacher probes ``z`` runs ``steps`` Lanczos steps
    (fully reorthogonalised); the Ritz values ``theta_j`` are the nodes and the
    squared first components ``s_{0j}^2`` of the Ritz vectors the weights of
    a Gauss quadrature of ``z^T g(H) z / n``, so that
    ``(1/n) sum_i g(lambda_i) ~ sum_j w_j g(theta_j)``. Uses
    ``num_probes * steps`` products.

    Args:
        f: the objective ``f(params) -> scalar``, or a :class:`FlatOperator`.
        params: the point (unused for a :class:`FlatOperator`).
        num_probes: independent probes (at least 1).
        steps: Lanczos steps per probe (at least 1; at most ``n`` are taken).
        grid_size: points of the smoothed density's grid (at least 1).
        kernel_width: the Gaussian kernel's standard deviation; default 1% of
            the range of the nodes.
        key: PRNG key for the probes (default ``PRNGKey(0)``).

    Returns:
        A :class:`SpectralDensity`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> f = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 1.0, 4.0]) * p**2)
        >>> sd = gx.hessian.spectral_density(f, jnp.zeros(3), num_probes=2, steps=3)
        >>> round(float(sd.weights @ sd.nodes), 4)  # tr H / n = 2
        2.0
    """
    num_probes = checks.integer("num_probes", num_probes, minimum=1)
    steps = checks.integer("steps", steps, minimum=1)
    grid_size = checks.integer("grid_size", grid_size, minimum=1)
    if kernel_width is not None:
        kernel_width = checks.real("kernel_width", kernel_width, lower=0, lower_open=True)
    options = dict(num_probes=num_probes, steps=steps, grid_size=grid_size)
    return on_hessian(_spectral_density, f, params, key, kernel_width=kernel_width, **options)


def _spectral_density(op, key, *, num_probes, steps, grid_size, kernel_width, mask=None):
    """SLQ on ``op``; with ``mask`` (0/1 per leaf, ``op`` zero off it) on the masked block."""
    steps = min(steps, op.size)
    probes = V.draw(_rademacher, key, op, (num_probes, op.size), 1)
    if mask is not None:
        probes = jax.tree.map(jnp.multiply, probes, mask)

    def quadrature(v0):
        result = run(op.matvec, v0, steps, op.like, op.dtype)
        theta, S, _, real = ritz_pairs(result)
        w = jnp.where(real, S[0] ** 2, 0)
        return jnp.where(real, theta, 0), w

    nodes, weights = jax.vmap(quadrature)(probes)
    nodes, weights = nodes.ravel(), weights.ravel() / num_probes
    lo, hi = (
        jnp.min(jnp.where(weights > 0, nodes, jnp.inf)),
        jnp.max(jnp.where(weights > 0, nodes, -jnp.inf)),
    )
    width = jnp.asarray(kernel_width if kernel_width is not None else 0.01, op.dtype)
    if kernel_width is None:
        width = width * jnp.maximum(hi - lo, jnp.finfo(op.dtype).eps)
    grid = jnp.linspace(lo - 5 * width, hi + 5 * width, grid_size)
    gauss = jnp.exp(-0.5 * ((grid[:, None] - nodes[None, :]) / width) ** 2) / (
        width * jnp.sqrt(2 * jnp.pi)
    )
    finite = jnp.all(jnp.isfinite(nodes)) & jnp.all(jnp.isfinite(weights))
    return SpectralDensity(nodes, weights, grid, gauss @ weights, width, finite)
