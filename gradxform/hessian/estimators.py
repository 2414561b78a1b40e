"""Stochastic estimators: trace (Hutch++, Hutchinson), diagonal, spectral density (SLQ)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform.hessian.lanczos import lanczos, ritz_pairs
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
    """``estimate`` of ``tr H`` and its ``stderr`` (standard error of the stochastic part).

    ``finite`` is False when a Hessian-vector product came out NaN or infinite:
    the estimate is then meaningless and says so instead of being a silent NaN.
    """

    estimate: jax.Array
    stderr: jax.Array
    num_matvecs: int
    finite: jax.Array


def _trace_estimate(estimate, stderr, num_matvecs):
    finite = jnp.isfinite(estimate) & jnp.isfinite(stderr)
    return TraceEstimate(estimate, stderr, num_matvecs, finite)


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype)


def trace(
    f, params=None, *, num_matvecs: int = 60, method: str = "hutch++", key=None
) -> TraceEstimate:
    """Estimates the trace of the Hessian of ``f`` at ``params`` (or of a :class:`FlatOperator`).

    ``"hutch++"`` (Meyer, Musco, Musco & Woodruff, 2021; the default) spends a
    third of the products on a sketch ``Q`` of the top of the spectrum, takes
    ``tr(Q^T H Q)`` exactly, and Hutchinson's estimator on the rest: on
    decaying spectra its error falls like ``1/m`` instead of ``1/sqrt(m)``.
    ``"hutchinson"`` averages ``z^T H z`` over Rademacher ``z``. The products
    are batched (``vmap``), not looped in Python.
    """
    if method not in ("hutch++", "hutchinson"):
        raise ValueError(f"method must be 'hutch++' or 'hutchinson'; got {method!r}")
    if not isinstance(num_matvecs, int) or num_matvecs < (3 if method == "hutch++" else 2):
        raise ValueError(f"num_matvecs must be an integer >= 3 (hutch++) or 2; got {num_matvecs!r}")
    key = jax.random.PRNGKey(0) if key is None else key
    return on_hessian(_trace, f, params, key, num_matvecs=num_matvecs, method=method)


def _trace(op, key, *, num_matvecs, method):
    batched = jax.vmap(op.matvec, in_axes=1, out_axes=1)
    if method == "hutchinson":
        Z = _rademacher(key, (op.size, num_matvecs), op.dtype)
        samples = jnp.sum(Z * batched(Z), axis=0)
        return _trace_estimate(
            jnp.mean(samples), jnp.std(samples, ddof=1) / jnp.sqrt(num_matvecs), num_matvecs
        )
    third = num_matvecs // 3
    k1, k2 = jax.random.split(key)
    S = _rademacher(k1, (op.size, third), op.dtype)
    Q, _ = jnp.linalg.qr(batched(S))
    exact = jnp.trace(Q.T @ batched(Q))
    rest = num_matvecs - 2 * third
    G = _rademacher(k2, (op.size, rest), op.dtype)
    G = G - Q @ (Q.T @ G)
    samples = jnp.sum(G * batched(G), axis=0)
    return _trace_estimate(
        exact + jnp.mean(samples), jnp.std(samples, ddof=1) / jnp.sqrt(rest), num_matvecs
    )


class DiagonalEstimate(NamedTuple):
    """``estimate`` of ``diag H`` (shaped like the params) and its per-entry ``stderr``."""

    estimate: object
    stderr: object
    num_matvecs: int


def diagonal(f, params=None, *, num_matvecs: int = 60, key=None) -> DiagonalEstimate:
    """Estimates ``diag H`` as the mean of ``z * (H z)`` over Rademacher ``z``.

    The estimator of Bekas, Kokiopoulou & Saad (2007).
    """
    if not isinstance(num_matvecs, int) or num_matvecs < 2:
        raise ValueError(f"num_matvecs must be an integer >= 2; got {num_matvecs!r}")
    key = jax.random.PRNGKey(0) if key is None else key
    return on_hessian(_diagonal, f, params, key, num_matvecs=num_matvecs)


def _diagonal(op, key, *, num_matvecs):
    Z = _rademacher(key, (op.size, num_matvecs), op.dtype)
    samples = Z * jax.vmap(op.matvec, in_axes=1, out_axes=1)(Z)
    estimate = jnp.mean(samples, axis=1)
    stderr = jnp.std(samples, axis=1, ddof=1) / jnp.sqrt(num_matvecs)
    return DiagonalEstimate(op.unravel(estimate), op.unravel(stderr), num_matvecs)


class SpectralDensity(NamedTuple):
    """A spectral density estimate by stochastic Lanczos quadrature.

    Attributes:
        nodes, weights: the quadrature: ``(num_probes * steps,)`` Ritz values and
            weights summing to 1 (the spectral measure ``(1/n) sum_i delta(lambda_i)``).
        grid, density: the measure smoothed by a Gaussian of standard deviation
            ``kernel_width``, on ``grid``; ``density`` integrates to about 1.
        kernel_width: the Gaussian's standard deviation (default: 1% of the
            range of the nodes).
    """

    nodes: jax.Array
    weights: jax.Array
    grid: jax.Array
    density: jax.Array
    kernel_width: jax.Array


def spectral_density(
    f,
    params=None,
    *,
    num_probes: int = 4,
    steps: int = 30,
    grid_size: int = 500,
    kernel_width: float | None = None,
    key=None,
) -> SpectralDensity:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature (Lin, Saad & Yang 2016).

    Each of ``num_probes`` Rademacher probes runs ``steps`` Lanczos steps
    (fully reorthogonalised); the Ritz values are the nodes and the squared
    first components of the Ritz vectors the weights. Uses
    ``num_probes * steps`` products.
    """
    for name, value in (("num_probes", num_probes), ("steps", steps), ("grid_size", grid_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    key = jax.random.PRNGKey(0) if key is None else key
    return on_hessian(
        _spectral_density,
        f,
        params,
        key,
        num_probes=num_probes,
        steps=steps,
        grid_size=grid_size,
        kernel_width=kernel_width,
    )


def _spectral_density(op, key, *, num_probes, steps, grid_size, kernel_width):
    steps = min(steps, op.size)
    probes = _rademacher(key, (num_probes, op.size), op.dtype)

    def quadrature(v0):
        result = lanczos(op.matvec, v0, steps)
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
    return SpectralDensity(nodes, weights, grid, gauss @ weights, width)
