"""Certified extreme eigenpairs: Lanczos with deflated restarts.

:func:`eigenpairs` runs :func:`~gradxform.hessian.lanczos` from a random start
until every requested Ritz pair is certified: its residual
``r = |H y - theta y|`` is at most ``max(tol * |theta|, operator_error)``, so
an eigenvalue of the computed operator lies within ``r`` of ``theta``, i.e.
within ``tol`` relative to ``theta`` itself, or within the operator's own
rounding error (``operator_error``, about ``eps |H|``) where that is larger.
Residuals are certificates for the operator as computed: each value lies
within about ``residual + operator_error`` of an eigenvalue of the exact
Hessian.

Multiplicity. One start vector cannot see it: ``diag(1, 1, 1, 2, ...)`` gives
the Ritz values ``1, 2, 3`` (each certified) and misses the repeated or
tightly clustered ones. So for ``k > 1`` the search then restarts from a new
random vector, deflated against the pairs found (Lanczos on ``P H P``, ``P``
the projector off them), merges what it certifies, and repeats until a
restart's extreme certified value lies beyond the reported ones. A pair is
``converged`` when it is certified and no restart found an eigenvalue beyond
it (up to its tolerance); like every Krylov method's, this check holds with
probability one over the random starts, not as a bound. The product budget
covers all restarts; pairs the budget left unchecked are flagged, never
returned silently as answers.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.lax.linalg import tridiagonal_solve

from gradxform import _linalg, checks
from gradxform.hessian import _vectors as V
from gradxform.hessian.lanczos import (
    LanczosResult,
    _breakdown,
    _run,
    _tridiagonal_eigenvalues,
    _used_rows,
)
from gradxform.hessian.operators import (
    FlatOperator,
    as_tree_operator,
    on_hessian,
    products_one_at_a_time,
)

__all__ = ["Eigenpairs", "eigenpairs", "hessian_eigenpairs"]


class Eigenpairs(NamedTuple):
    """Extreme eigenpairs with their certificates.

    Attributes:
        values: Ritz values, ``(k,)``: top-k descending, bottom-k ascending,
            or for ``"both"`` the bottom k ascending then the top k descending.
        vectors: the Ritz vectors, shaped like the params with a leading ``k`` axis.
        residuals: ``|H y - theta y|`` for each pair, ``H`` the operator as
            computed: an eigenvalue of the computed operator lies within it of
            the Ritz value.
        converged: whether each pair is certified and checked to be the one
            asked for: its residual is at most ``tol``, and a deflated restart
            found no eigenvalue beyond it (see :func:`eigenpairs`).
        tol: the absolute residual tolerance applied to each pair,
            ``max(rel_tol * |value|, operator_error)``.
        num_matvecs: Hessian-vector products used, restarts included.
        invariant: True if the first start vector's Krylov space became
            invariant ("breakdown"): its Ritz values are then eigenvalues to
            rounding. It does not mean every eigenvalue was found: one start
            vector sees each distinct eigenvalue once at most (never its
            multiplicity), and none whose eigenvectors it is orthogonal to.
        finite: False when a Hessian-vector product came out NaN or infinite;
            no pair then counts as converged.
        operator_error: an estimate of the computed operator's own rounding
            error, ``8 eps |H|`` (``eps`` of the products' dtype, ``|H|``
            estimated as ``max |alpha_j| + beta_j`` over the Lanczos steps).
            The residuals certify the operator as computed; an eigenvalue of the exact Hessian lies
            within about ``residual + operator_error`` of each value.
        krylov_dimension: the steps of the first (undeflated) Lanczos run from
            one random start: the dimension that probabilistic bounds on a
            missed extreme eigenvalue (Kuczynski-Wozniakowski) apply to.
        nonfinite_batch: for a streamed
            :class:`~gradxform.hessian.DatasetObjective`, the index of the first
            batch whose product was NaN or infinite; None otherwise.
    """

    values: jax.Array
    vectors: Any
    residuals: jax.Array
    converged: jax.Array
    tol: jax.Array
    num_matvecs: jax.Array
    invariant: jax.Array
    finite: jax.Array
    operator_error: jax.Array
    krylov_dimension: jax.Array
    nonfinite_batch: int | None = None


_OPERATOR_ERROR_FACTOR = 8.0


class _Spec(NamedTuple):
    """The static settings of :func:`eigenpairs`."""

    k: int
    which: str
    tol: float
    max_matvecs: int
    steps: int
    n: int
    eps: float  # of the products' dtype


def _threshold(spec: _Spec, values, operator_error):
    return jnp.maximum(spec.tol * jnp.abs(values), operator_error)


def _requested(count, k: int, which: str):
    """Indices of the requested values among ``count`` ascending ones, and which are distinct."""
    i = jnp.arange(k)
    bottom, top = i, count - 1 - i
    if which == "both":
        idx = jnp.concatenate([bottom, top])
        distinct = jnp.concatenate([i < count, (i < count) & (top >= k)])
    else:
        idx, distinct = (bottom if which == "bottom" else top), i < count
    return jnp.clip(idx, 0, jnp.maximum(count - 1, 0)), distinct


def _extremes(spec: _Spec) -> np.ndarray:
    """The slots of the extreme pair at each requested end."""
    mask = np.zeros(2 * spec.k if spec.which == "both" else spec.k, bool)
    mask[0] = True
    if spec.which == "both":
        mask[spec.k] = True
    return mask


def _selected_values(a, off, used, s: int, k: int, ends: tuple[bool, ...]):
    """The ``k`` lowest (``True`` in ``ends``) or highest (``False``, descending)
    eigenvalues of the used block of ``T``, by bisection, for each end at once; the
    unused diagonal is pushed beyond the spectrum so the indices are static.

    Returns ``(padded, values)``: the padded diagonal ``(ends, s)`` and the values ``(ends, k)``.
    """
    bound = jnp.max(jnp.where(used, jnp.abs(a), 0)) + 2 * jnp.max(jnp.abs(off), initial=0) + 1
    low = np.array(ends)
    padded = jnp.where(used, a, jnp.where(low[:, None], 2 * bound, -2 * bound))
    target = np.where(low[:, None], np.arange(k), np.arange(s - k, s)).astype(np.int32)
    values = jax.vmap(_tridiagonal_eigenvalues, (0, None, 0))(padded, off, target)
    return padded, jnp.where(low[:, None], values, values[:, ::-1])


def _window_pairs(result: LanczosResult, spec: _Spec, s: int):
    """The requested Ritz pairs of a run from the leading ``s x s`` block of ``T``.

    The values come by bisection, the eigenvectors ``x`` of ``T`` by two steps of
    inverse iteration, orthonormalised, and each value is then the Rayleigh quotient
    of its ``x``, with the residual ``|H Q^T x - theta Q^T x|``, i.e.
    ``sqrt(|T x - theta x|^2 + (beta_m x_m)^2)``: a certificate for the vector
    returned, at ``O(k s)`` cost instead of a dense ``O(s^3)`` eigensolve. Both
    ends of ``"both"`` are one batched computation.
    """
    size = result.size
    a, used = result.alpha[:s], jnp.arange(s) < size
    off = jnp.where(jnp.arange(s - 1) + 1 < size, result.beta[: s - 1], 0)
    ends = (True, False)[spec.which == "top" : 1 + (spec.which != "bottom")]
    diagonal, values = _selected_values(a, off, used, s, spec.k, ends)
    x = _inverse_iteration((diagonal[:, None] - values[:, :, None]).reshape(-1, s), off, used)
    # orthonormal: a cluster gets distinct vectors
    blocks = _linalg.batched(_linalg.qr_basis, x.reshape(len(ends), spec.k, s).transpose(0, 2, 1))
    X = blocks.transpose(1, 0, 2).reshape(s, -1)  # (s, K)
    TX = a[:, None] * X + jnp.pad(off[:, None] * X[1:], ((0, 1), (0, 0)))
    TX = TX + jnp.pad(off[:, None] * X[:-1], ((1, 0), (0, 0)))
    TX = jnp.where(used[:, None], TX, 0)
    theta = jnp.sum(X * TX, axis=0)
    last = jnp.take(X, jnp.maximum(size - 1, 0), axis=0)
    beta_last = jnp.take(result.beta, jnp.maximum(size - 1, 0))
    residual = jnp.sqrt(jnp.sum((TX - theta * X) ** 2, axis=0) + (beta_last * last) ** 2)
    _, distinct = _requested(size, spec.k, spec.which)
    absmax = _norm_estimate(result.alpha[:s], result.beta[:s], size)
    return theta, residual, distinct, absmax, X


def _norm_estimate(alpha, beta, size):
    """``max |alpha_j| + beta_j`` over the steps taken: between ``|T|`` / 2 and ``2 |H|``."""
    return jnp.max(jnp.where(jnp.arange(alpha.shape[0]) < size, jnp.abs(alpha) + beta, 0))


def _inverse_iteration(shifted, off, used):
    """Two steps of inverse iteration for each row of ``shifted`` (diagonals of ``T - theta I``)."""
    K, s = shifted.shape
    dl = jnp.broadcast_to(jnp.pad(off, (1, 0)), (K, s))
    du = jnp.broadcast_to(jnp.pad(off, (0, 1)), (K, s))
    start = jnp.where(used, 1.0 + 0.1 * jnp.cos(jnp.arange(s)), 0).astype(shifted.dtype)
    x = jnp.broadcast_to(start, (K, s))
    for _ in range(2):
        x = tridiagonal_solve(dl, shifted, du, x[..., None], perturb_singular=True)[..., 0]
        x = jnp.where(used, x, 0)
        top = jnp.max(jnp.abs(x), axis=1, keepdims=True)
        x = jnp.where(top > 0, x / jnp.where(top > 0, top, 1), 0)
    return x


class _Pool(NamedTuple):
    """The pairs found so far (``valid`` marks the filled slots)."""

    values: jax.Array
    residuals: jax.Array
    vectors: Any
    valid: jax.Array


class _State(NamedTuple):
    """The restart loop's carry: ``level_lo`` / ``level_hi`` are the extreme
    certified values of the latest restart, beyond which nothing is left."""

    pool: _Pool
    Q: Any
    used: jax.Array
    first_size: jax.Array
    rounds: jax.Array
    level_lo: jax.Array
    level_hi: jax.Array
    scale: jax.Array
    invariant: jax.Array
    done: jax.Array


def _merge(pool: _Pool, new: _Pool, spec: _Spec) -> _Pool:
    """The pool's and the new pairs' ``k`` lowest and/or highest, in the pool's slots."""
    join = jnp.concatenate
    both = _Pool(
        join([pool.values, new.values]),
        join([pool.residuals, new.residuals]),
        V.concatenate(pool.vectors, new.vectors),
        join([pool.valid, new.valid]),
    )
    order = jnp.argsort(jnp.where(both.valid, both.values, jnp.inf), stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
    count = jnp.sum(both.valid)
    keep = jnp.zeros_like(both.valid)
    if spec.which != "top":
        keep = keep | (rank < spec.k)
    if spec.which != "bottom":
        keep = keep | (rank >= count - spec.k)
    keep = keep & both.valid
    pick = jnp.argsort(~keep, stable=True)[: pool.values.shape[0]]
    return _Pool(both.values[pick], both.residuals[pick], V.take(both.vectors, pick), keep[pick])


def _report(state: _State, spec: _Spec):
    """``(index into the pool, values, residuals, tolerances, converged)`` as reported."""
    pool = state.pool
    count = jnp.sum(pool.valid)
    ascending = jnp.argsort(jnp.where(pool.valid, pool.values, jnp.inf), stable=True)
    i = jnp.arange(spec.k)
    bottom = ascending[jnp.clip(i, 0, jnp.maximum(count - 1, 0))]
    top = ascending[jnp.clip(count - 1 - i, 0, jnp.maximum(count - 1, 0))]
    idx = {"bottom": bottom, "top": top, "both": jnp.concatenate([bottom, top])}[spec.which]
    filled = jnp.tile(i < count, 2 if spec.which == "both" else 1)
    values, residuals = pool.values[idx], pool.residuals[idx]
    tol = _threshold(spec, values, _OPERATOR_ERROR_FACTOR * spec.eps * state.scale)
    beyond_lo, beyond_hi = values <= state.level_lo + tol, values >= state.level_hi - tol
    lower = np.arange(idx.shape[0]) < (spec.k if spec.which == "both" else 0)
    if spec.which == "bottom":
        lower = ~lower
    checked = jnp.where(lower, beyond_lo, beyond_hi) | (count >= spec.n)
    converged = filled & checked & (residuals <= tol) & jnp.isfinite(values)
    return idx, values, residuals, tol, converged


def _deflated(operator: V.TreeOperator, Y, work):
    """``v -> P H P v`` in the working dtype, ``P = I - Y^T Y`` (``Y``: orthonormal rows, or 0)."""

    def deflate(v):
        return V.project_out(Y, v)

    def matvec(v):
        return deflate(V.cast(operator.matvec(V.cast_like(deflate(v), operator.like)), work))

    return matvec


def _kth(state: _State, spec: _Spec):
    """The reported k-th lowest and k-th highest pool values (``+-inf`` while unfilled)."""
    values = jnp.sort(jnp.where(state.pool.valid, state.pool.values, jnp.nan))
    count = jnp.sum(state.pool.valid)
    lo = jnp.where(count >= spec.k, values[spec.k - 1], jnp.inf)
    hi = jnp.where(count >= spec.k, values[jnp.maximum(count - spec.k, 0)], -jnp.inf)
    return lo, hi


def _ends(spec: _Spec, values, residuals, ok, kth):
    """Per end: whether the extreme pair settles the search, and the level it certifies.

    An extreme pair settles its end when it is certified (``ok``), or when its
    residual is under a tenth of its distance beyond the reported k-th value:
    the extreme Ritz value of the deflated operator then lies clearly beyond
    the reported ones, so no further eigenvalue is among them.
    """
    e = int(np.flatnonzero(_extremes(spec))[-1])
    lo, hi, r_lo, r_hi = values[0], values[e], residuals[0], residuals[e]
    lo_settled = ok[0] | (r_lo <= 0.1 * (lo - kth[0]))
    hi_settled = ok[e] | (r_hi <= 0.1 * (kth[1] - hi))
    settled = {"bottom": lo_settled, "top": hi_settled, "both": lo_settled & hi_settled}
    return settled[spec.which], lo_settled, lo - r_lo, hi_settled, hi + r_hi


def _stop(spec: _Spec, first, scale, kth):
    """Round 1 stops when every requested pair is certified, a restart when its extremes settle.

    Beside the flag it returns the pairs it checked, ``(values, residuals, distinct,
    absmax, X)`` with the eigenvectors ``X`` of ``T`` (``steps`` rows): at the last step
    they are the run's Ritz pairs (see ``_run``'s ``seen``).

    The check works on the whole ``steps x steps`` tridiagonal, its unused rows
    decoupled: ``O(k steps)`` per check, small beside a product, and one copy of the
    Ritz computation in the compiled loop. (One per Lanczos window, 16, 64, ...,
    ``steps`` rows, cost ~1.3 s of XLA compile each and saved nothing measurable.)
    """

    def stop(result):
        values, residuals, distinct, absmax, X = _window_pairs(result, spec, spec.steps)
        error = _OPERATOR_ERROR_FACTOR * spec.eps * jnp.maximum(scale, absmax)
        ok = residuals <= _threshold(spec, values, error)
        flag = jnp.where(first, jnp.all(ok & distinct), _ends(spec, values, residuals, ok, kth)[0])
        return flag, (values, residuals, distinct, absmax, X)

    return stop


def _ritz_vectors(X, result: LanczosResult, s: int):
    """``Y = X^T Q`` from the leading ``s`` rows (the filled ones) of ``X`` and the basis."""
    return V.combine(X[:s], _used_rows(result.basis, result.size, s))


def _round(operator: V.TreeOperator, key, spec: _Spec, mask, c: _State) -> _State:
    """One Lanczos run on the operator deflated against the pool, merged into it.

    ``mask`` (a 0/1 scalar per leaf, or None) confines the start vectors to a block's
    leaves: on ``P H P`` the run then stays in the block (see :func:`_eigenpairs`)."""
    work = c.scale.dtype
    first = c.rounds == 0
    Y = V.where_rows(c.pool.valid, c.pool.vectors)
    start = jax.lax.cond(first, lambda: key, lambda: jax.random.fold_in(key, c.rounds))
    v0 = V.cast(V.draw(jax.random.normal, start, operator, (operator.size,), 0), work)
    if mask is not None:
        v0 = jax.tree.map(lambda m, x: m.astype(work) * x, mask, v0)
    v0 = V.project_out(Y, v0)
    kth = _kth(c, spec)
    stop = _stop(spec, first, c.scale, kth)
    matvec = _deflated(operator, Y, work)
    limit = spec.max_matvecs - c.used
    slots = 2 * spec.k if spec.which == "both" else spec.k
    seen = (*(jnp.zeros(slots, work) for _ in range(2)), jnp.zeros(slots, bool), c.scale)
    seen = (*seen, jnp.zeros((spec.steps, slots), work))
    norm = V.norm(v0, work)
    q0 = jax.tree.map(lambda x: x / norm, v0)
    like = V.retyped(operator.like, work)
    result, pairs = _run(matvec, q0, c.Q, limit, stop, 1, like, False, seen)
    values, residuals, distinct, absmax, X = pairs
    vectors = _ritz_vectors(X, result, spec.steps)
    scale = jnp.maximum(c.scale, absmax)
    # |(I - P) H y| <= |R_pool| for y orthogonal to the pool: the residual for H itself
    residuals = residuals + jnp.sqrt(jnp.sum(jnp.where(c.pool.valid, c.pool.residuals, 0) ** 2))
    ok = residuals <= _threshold(spec, values, _OPERATOR_ERROR_FACTOR * spec.eps * scale)
    pool = _merge(c.pool, _Pool(values, residuals, vectors, distinct & (first | ok)), spec)
    settled, lo_settled, lo, hi_settled, hi = _ends(spec, values, residuals, ok, kth)
    norm = _norm_estimate(result.alpha, result.beta, result.size)
    last = result.beta[jnp.maximum(result.size - 1, 0)]
    eps = jnp.finfo(work).eps
    invariant = jnp.where(first, _breakdown(last, norm, operator.size, eps), c.invariant)
    state = c._replace(
        pool=pool,
        Q=result.basis,
        used=c.used + result.size,
        first_size=jnp.where(first, result.size, c.first_size),
        rounds=c.rounds + 1,
        level_lo=jnp.where(lo_settled, lo, c.level_lo),
        level_hi=jnp.where(hi_settled, hi, c.level_hi),
        scale=scale,
        invariant=invariant,
    )
    converged = _report(state, spec)[-1]
    progress = settled & (jnp.sum(pool.valid) < spec.n)
    done = (state.used >= spec.max_matvecs) | jnp.all(converged) | ~progress
    return state._replace(done=done)


def eigenpairs(
    operator: FlatOperator | V.TreeOperator,
    k: int = 1,
    which: str = "top",
    *,
    tol: float | None = None,
    max_matvecs: int = 60,
    key: jax.Array | None = None,
    float64_accumulation: bool = False,
) -> Eigenpairs:
    """The ``k`` largest, smallest or both extreme eigenpairs of a symmetric operator.

    Lanczos with full reorthogonalisation from a random start, then, for
    ``k > 1``, restarts deflated against the pairs found, so that repeated and
    clustered eigenvalues are found or flagged (see :mod:`gradxform.hessian.extreme`
    for what ``converged`` certifies).

    Args:
        operator: the :class:`FlatOperator` (see :func:`hessian_eigenpairs`
            for ``f, params``).
        k: pairs per end (a Python int), at most the operator's size ``n``;
            for ``"both"`` with ``2k > n`` the two ends share pairs.
        which: ``"top"``, ``"bottom"`` or ``"both"``.
        tol: relative residual tolerance; default ``sqrt(eps)`` of the working dtype.
        max_matvecs: the product budget over all restarts, which also bounds
            the basis size (a step costs ``O(steps taken * n)``, not
            ``O(max_matvecs * n)``).
        key: PRNG key for the starting vectors (default ``PRNGKey(0)``).
        float64_accumulation: keep the basis and ``T`` in float64 while the
            products run in the params' dtype (needs ``jax_enable_x64``).

    Returns:
        An :class:`Eigenpairs` record; ``vectors`` are mapped back by ``operator.unravel``.

    Raises:
        ValueError: if ``k`` exceeds the operator's size.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> A = jnp.diag(jnp.arange(1.0, 7.0))
        >>> op = gx.hessian.FlatOperator(lambda v: A @ v, 6, jnp.float32, lambda v: v)
        >>> pairs = gx.hessian.eigenpairs(op, k=1, which="top")
        >>> round(float(pairs.values[0]), 3), bool(pairs.converged[0])
        (6.0, True)
    """
    op = as_tree_operator(operator)
    spec, work = _spec(op, k, which, tol, max_matvecs, float64_accumulation)
    if isinstance(operator, FlatOperator):  # one compiled program per operator and options
        options = dict(tol=tol, max_matvecs=max_matvecs, float64_accumulation=float64_accumulation)
        return on_hessian(_eigenpairs_of_operator, operator, None, key, k=k, which=which, **options)
    key = jax.random.PRNGKey(0) if key is None else key
    return _eigenpairs(op, key, spec, work)


def _eigenpairs(op: V.TreeOperator, key, spec: _Spec, work, mask: Any = None) -> Eigenpairs:
    """:func:`eigenpairs` on a pytree operator with checked settings.

    With ``mask`` (a 0/1 scalar per leaf) the operator is to be ``P H P`` for the
    mask's projector ``P`` and ``spec.n`` the block's size (a traced scalar may
    stand for it): the start vectors are masked, so the Krylov spaces stay in
    the block, and the pairs are ``H_bb``'s. So a ``vmap`` over masks finds the
    pairs of every block in lockstep (:func:`~gradxform.hessian.block_spectra`).
    """
    init = _initial_state(spec, work, op.like)
    body = functools.partial(_round, op, key, spec, mask)
    final = jax.lax.while_loop(lambda c: ~c.done, body, init)
    idx, values, residuals, tol_used, converged = _report(final, spec)
    finite = jnp.all(jnp.isfinite(values)) & jnp.all(jnp.isfinite(residuals))
    vectors = V.cast_like(V.take(final.pool.vectors, idx), op.like)
    return Eigenpairs(
        values=values,
        vectors=V.stacked_output(op, vectors),
        residuals=residuals,
        converged=converged & finite,
        tol=tol_used,
        num_matvecs=final.used,
        invariant=final.invariant,
        finite=finite,
        operator_error=_OPERATOR_ERROR_FACTOR * spec.eps * final.scale,
        krylov_dimension=final.first_size,
    )


def _initial_state(spec: _Spec, work, like) -> _State:
    """An empty pool and basis buffer before the first round (pytrees shaped like ``like``)."""
    slots = 2 * spec.k if spec.which == "both" else spec.k
    pool = _Pool(
        jnp.zeros(slots, work),
        jnp.zeros(slots, work),
        V.stacked_zeros(like, slots, work),
        jnp.zeros(slots, bool),
    )
    zero = jnp.zeros([], jnp.int32)
    return _State(
        pool, V.stacked_zeros(like, spec.steps, work), zero, zero, zero,
        jnp.array(-jnp.inf, work), jnp.array(jnp.inf, work), jnp.zeros([], work),
        jnp.array(False), jnp.array(False),
    )  # fmt: skip


def _spec(operator, k, which, tol, max_matvecs, float64_accumulation):
    """The checked static settings and the working dtype."""
    checks.choice("which", which, ("top", "bottom", "both"))
    k = checks.integer("k", k, minimum=1)
    if k > operator.size:
        checks.fail("k", f"at most the operator size n = {operator.size} for which={which!r}", k)
    max_matvecs = checks.integer("max_matvecs", max_matvecs, minimum=1)
    float64_accumulation = checks.boolean("float64_accumulation", float64_accumulation)
    if float64_accumulation and not jax.config.read("jax_enable_x64"):
        what = "False unless jax_enable_x64 is set (jax.config.update('jax_enable_x64', True))"
        checks.fail("float64_accumulation", what, True)
    work = jnp.dtype(jnp.float64 if float64_accumulation else operator.dtype)
    if tol is None:
        tol = float(np.sqrt(np.finfo(work).eps))
    tol = checks.real("tol", tol, lower=0, lower_open=True)
    eps = float(jnp.finfo(operator.dtype).eps)
    steps = min(max(max_matvecs, 2 * k), operator.size)  # room for 2k Ritz values (or all n)
    return _Spec(k, which, tol, max_matvecs, steps, operator.size, eps), work


def hessian_eigenpairs(
    f: Any, params: Any, k: int = 1, which: str = "top", **options: Any
) -> Eigenpairs:
    """:func:`eigenpairs` of the Hessian of ``f`` at ``params`` (linearised once).

    Args:
        f: the objective ``f(params) -> scalar``, or a :class:`FlatOperator`.
        params: the point, a pytree of float arrays (unused for a :class:`FlatOperator`).
        k, which: as for :func:`eigenpairs`.
        **options: ``tol``, ``max_matvecs``, ``key``, ``float64_accumulation``, as for
            :func:`eigenpairs`.

    Returns:
        An :class:`Eigenpairs` record whose ``vectors`` are shaped like ``params``
        with a leading axis.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> f = lambda p: 0.5 * jnp.sum(jnp.arange(1.0, 6.0) * p**2)  # eigenvalues 1..5
        >>> pairs = gx.hessian.hessian_eigenpairs(f, jnp.zeros(5), k=2, which="both")
        >>> [round(float(v), 4) for v in pairs.values], bool(pairs.converged.all())
        ([1.0, 2.0, 5.0, 4.0], True)
    """
    key = options.pop("key", None)
    return on_hessian(_eigenpairs_of_operator, f, params, key, k=k, which=which, **options)


@products_one_at_a_time
def _eigenpairs_of_operator(operator, key, **options):
    return eigenpairs(operator, key=key, **options)
