r"""Kronecker-factored preconditioners: Shampoo and SOAP.

A matrix leaf :math:`G \in \mathbb{R}^{m \times n}` keeps two statistics, the
left :math:`L = \sum G G^\top` (or an EMA) of size :math:`m \times m` and the
right :math:`R = \sum G^\top G` of size :math:`n \times n`, whose Kronecker
product approximates the full-matrix AdaGrad statistic of :math:`\mathrm{vec}(G)`.
Shampoo preconditions with their inverse fourth roots,
:math:`L^{-1/4} G R^{-1/4}`; SOAP (Vyas et al., 2024) runs Adam in their
eigenbasis, :math:`Q_L^\top G Q_R`, and rotates the result back.

Shapes (static, fixed when the transform is built):

* a side larger than ``max_precond_dim`` is not factored (identity on that
  side); a leaf of rank < 2, or with neither side factored, falls back to the
  diagonal rule (Adam for SOAP, AdaGrad/RMSProp for Shampoo);
* a leaf of rank > 2 is, with ``batching="leading"`` (default), a batch of
  independent matrices over its leading axes (a stack of layers, as
  :func:`gradxform.orthogonalize` treats it: each matrix has its own
  statistics); with ``"flatten"``, one matrix ``(shape[0], prod(shape[1:]))``.

The statistics, eigenbases and roots are float32, or the parameter's dtype when
wider (``stats_dtype`` overrides); ``eigh_dtype=jnp.float64`` computes the
decompositions in float64 (with ``jax_enable_x64``). The expensive refresh
runs in a ``lax.switch`` on the step count, so other steps only project.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from gradxform import _linalg, checks
from gradxform.base import EmptyState, GradientTransformationExtraArgs
from gradxform.hyperparams import Hyperparam, Hyperparams, HyperparamState, ScalarOrSchedule
from gradxform.transforms.orthogonal import _matrix_shape
from gradxform.transforms.partition import _path_string

__all__ = ["GraftState", "ShampooState", "SoapState", "graft", "scale_by_shampoo", "scale_by_soap"]

_BATCHING = ("leading", "flatten")
_REFRESH = ("qr", "eigh")
_DECAY: dict[str, Any] = {"lower": 0, "upper": 1, "upper_open": True}


class _Layout(NamedTuple):
    """How a leaf is seen as matrices: ``view`` shape, the sides factored."""

    view: tuple[int, ...]
    left: bool
    right: bool


def _layout(shape: tuple[int, ...], max_dim: int, batching: str) -> _Layout:
    if len(shape) < 2:
        return _Layout(shape, False, False)
    rows, cols = _matrix_shape(shape, batching)
    view = (*shape[:-2], rows, cols) if batching == "leading" else (rows, cols)
    if rows > max_dim and cols > max_dim:
        return _Layout(shape, False, False)
    return _Layout(view, rows <= max_dim, cols <= max_dim)


def _empty(dtype) -> jax.Array:
    return jnp.zeros((0,), dtype)


def _t(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, -1, -2)


def _gram(x: jax.Array, side: str) -> jax.Array:
    """:math:`X X^\\top` (``"left"``) or :math:`X^\\top X` (``"right"``), batched."""
    return x @ _t(x) if side == "left" else _t(x) @ x


def _identity(view: tuple[int, ...], side: str, dtype) -> jax.Array:
    d = view[-2] if side == "left" else view[-1]
    return jnp.broadcast_to(jnp.eye(d, dtype=dtype), (*view[:-2], d, d))


def _stats_dtype(leaf: Any, stats_dtype: Any) -> Any:
    if stats_dtype is not None:
        return stats_dtype
    return jnp.promote_types(jnp.asarray(leaf).dtype, jnp.float32)


def _check_real(params: Any, name: str) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
            checks.fail(
                f"leaf {_path_string(path)!r} of params",
                f"a real floating array for {name}",
                jnp.asarray(leaf).dtype,
            )


def _unzip(fn: Callable, n: int, *trees: Any) -> tuple[Any, ...]:
    """``n`` trees from a per-leaf ``fn`` returning ``n`` arrays."""
    leaves, treedef = jax.tree.flatten(trees[0])
    rest = [treedef.flatten_up_to(t) for t in trees[1:]]  # type: ignore[attr-defined]
    outs = [fn(*args) for args in zip(leaves, *rest)]
    return tuple(jax.tree.unflatten(treedef, [o[i] for o in outs]) for i in range(n))


def _leafwise(
    hp: Hyperparams, state_type: Any, name: str, init_leaf: Callable, update_leaf: Callable
) -> GradientTransformationExtraArgs:
    """A block whose state is ``state_type(<per-leaf fields>..., hyperparams)``, built and
    stepped leaf by leaf: ``init_leaf(p)`` gives a leaf's fields, ``update_leaf(g,
    *fields, values)`` its update and new fields."""
    n = len(state_type._fields) - 1

    def init_fn(params):
        _check_real(params, name)
        return state_type(*_unzip(init_leaf, n, params), hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params
        values, hyper = hp.step(state.hyperparams, extra_args)
        out = _unzip(lambda g, *s: update_leaf(g, *s, values), n + 1, updates, *state[:n])
        return out[0], state_type(*out[1:], hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _eigh_descending(m: jax.Array, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues (descending) and eigenvectors of symmetric ``m``, computed in ``dtype``."""
    w, v = _linalg.batched(_linalg.eigh, m.astype(dtype))
    return w[..., ::-1].astype(m.dtype), v[..., ::-1].astype(m.dtype)


def _inverse_root(m: jax.Array, eps: jax.Array, order: int, dtype: Any = None) -> jax.Array:
    r""":math:`(M + \epsilon I)^{-1/\text{order}}` of a symmetric PSD ``m`` (batched) by ``eigh``.

    Negative eigenvalues from rounding are clamped to 0 first.

    Args:
        m: symmetric matrices, shape ``(..., d, d)``.
        eps: :math:`\epsilon > 0`, a scalar.
        order: the root's order (4 for a two-sided Shampoo factor).
        dtype: the dtype of the decomposition (default: ``m``'s).

    Returns:
        The inverse roots, in ``m``'s dtype.
    """
    w, v = _eigh_descending(m, dtype or m.dtype)
    scale = (jnp.maximum(w, 0) + eps.astype(w.dtype)) ** (-1.0 / order)
    return (v * scale[..., None, :]) @ _t(v)


def _power_qr_step(m: jax.Array, q: jax.Array, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """SOAP's refresh: one power-iteration step :math:`M Q` re-orthonormalised by QR,
    its columns first sorted by the estimated eigenvalues :math:`\\mathrm{diag}(Q^\\top M Q)`
    (descending). Returns the new basis and the sort order (to permute the second moment)."""
    mq = m @ q
    estimate = jnp.sum(q * mq, axis=-2)
    order = jnp.argsort(-estimate, axis=-1, stable=True)
    power = jnp.take_along_axis(mq, order[..., None, :], axis=-1)
    basis = _linalg.batched(_linalg.qr_basis, power.astype(dtype))
    return basis.astype(m.dtype), order


class ShampooState(NamedTuple):
    """State of :func:`scale_by_shampoo`.

    Attributes:
        stats_left: per leaf, the left statistic :math:`L` (``(..., m, m)``),
            or an empty array where the side is not factored.
        stats_right: per leaf, :math:`R` (``(..., n, n)``) or empty.
        root_left: per leaf, :math:`(L + \\epsilon I)^{-1/(2k)}` of the last
            refresh (:math:`k` the number of factored sides), or empty.
        root_right: per leaf, the right root, or empty.
        diagonal: per leaf that falls back to the diagonal rule, the sum (or
            EMA) of :math:`g^2`, shaped like the leaf; empty elsewhere.
        hyperparams: the block's store (``beta2`` when an EMA, ``eps``,
            ``precondition_frequency`` and the step count), or ``EmptyState()``
            when they are all handles.
    """

    stats_left: Any
    stats_right: Any
    root_left: Any
    root_right: Any
    diagonal: Any
    hyperparams: HyperparamState | EmptyState


def _accumulate(stat: jax.Array, sample: jax.Array, decay: Any) -> jax.Array:
    """``stat + sample`` (``decay`` None) or :math:`\\beta s + (1 - \\beta) x`."""
    if decay is None:
        return stat + sample
    beta, gain = decay
    return beta.astype(stat.dtype) * stat + gain.astype(stat.dtype) * sample


def scale_by_shampoo(
    beta2: ScalarOrSchedule | Hyperparam | None = None,
    eps: ScalarOrSchedule | Hyperparam = 1e-6,
    precondition_frequency: int | Hyperparam = 1,
    *,
    max_precond_dim: int = 10000,
    batching: str = "leading",
    stats_dtype: DTypeLike | None = None,
    eigh_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Shampoo's direction (Gupta et al., 2018): :math:`L^{-1/4} G R^{-1/4}` on matrices.

    .. math::

        L \leftarrow L + G G^\top, \quad R \leftarrow R + G^\top G, \quad
        u = (L + \epsilon I)^{-1/4}\, G\, (R + \epsilon I)^{-1/4}

    (with ``beta2``: :math:`L \leftarrow \beta_2 L + (1 - \beta_2) G G^\top`).
    The roots are recomputed by ``eigh`` at updates :math:`t` with
    :math:`(t - 1) \bmod f = 0` (the first update, then every
    ``precondition_frequency``), reused in between. With one side not factored
    (larger than ``max_precond_dim``) the other uses the root of order 2; a
    leaf with none is diagonal: :math:`u = g / \sqrt{v + \epsilon}`, :math:`v`
    the sum (or EMA) of :math:`g^2`. :math:`\epsilon` is added to the
    statistic's eigenvalues when the root is taken (pytorch-optimizer's
    Shampoo starts its statistics at :math:`\epsilon I`: the same for sums).
    See :func:`gradxform.shampoo` for the optimizer.

    Args:
        beta2: ``None`` (sum the statistics, the paper and pytorch-optimizer),
            or the EMA decay in [0, 1).
        eps: :math:`\epsilon > 0`, added to the eigenvalues.
        precondition_frequency: :math:`f`, an integer >= 1 (in the store:
            settable without recompiling).
        max_precond_dim: sides larger than this (an integer >= 1) are not factored.
        batching: ``"leading"`` or ``"flatten"`` for leaves of rank > 2 (see the module).
        stats_dtype: dtype of the statistics and roots (default: float32 or wider).
        eigh_dtype: dtype of the eigendecomposition (default: the statistics').

    Returns:
        The block; its state is :class:`ShampooState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_shampoo(eps=0.0)
        >>> g = jnp.array([[4.0, 0.0], [0.0, 1.0]])
        >>> u, _ = tx.update(g, tx.init(g))
        >>> [round(float(v), 4) for v in jnp.diag(u)]  # g / sqrt(|g|) on a diagonal
        [1.0, 1.0]
    """
    max_dim = checks.integer("max_precond_dim", max_precond_dim, minimum=1)
    checks.choice("batching", batching, _BATCHING)
    sdt = checks.optional_dtype("stats_dtype", stats_dtype)
    edt = checks.optional_dtype("eigh_dtype", eigh_dtype)
    specs = {"eps": eps, "precondition_frequency": precondition_frequency}
    if beta2 is not None:
        specs["beta2"] = beta2
    hp = Hyperparams(**specs).check("eps", lower=0).use_count()
    hp.check("precondition_frequency", lower=1, integer=True)
    if beta2 is not None:
        hp.check("beta2", **_DECAY).use_complement("beta2")

    def init_leaf(p):
        lay, dt = _layout(p.shape, max_dim, batching), _stats_dtype(p, sdt)
        sides = [
            (_identity(lay.view, s, dt) * 0, _identity(lay.view, s, dt))
            if on
            else (_empty(dt), _empty(dt))
            for s, on in (("left", lay.left), ("right", lay.right))
        ]
        diag = _empty(dt) if lay.left or lay.right else jnp.zeros_like(p, dtype=dt)
        return sides[0][0], sides[1][0], sides[0][1], sides[1][1], diag

    def update_leaf(g, left, right, root_l, root_r, diag, values):
        lay, dt = _layout(g.shape, max_dim, batching), _stats_dtype(g, sdt)
        x = g.astype(dt).reshape(lay.view)
        decay = None if beta2 is None else (values["beta2"], values.complement("beta2"))
        e = values["eps"].astype(dt)
        if not (lay.left or lay.right):
            diag = _accumulate(diag, x * x, decay)
            return (x / jnp.sqrt(diag + e)).astype(g.dtype), left, right, root_l, root_r, diag
        order = 2 * (int(lay.left) + int(lay.right))
        left = _accumulate(left, _gram(x, "left"), decay) if lay.left else left
        right = _accumulate(right, _gram(x, "right"), decay) if lay.right else right
        refresh = (values.count - 1) % values["precondition_frequency"] == 0

        def roots(_):
            new_l = _inverse_root(left, e, order, edt) if lay.left else root_l
            return new_l, _inverse_root(right, e, order, edt) if lay.right else root_r

        root_l, root_r = jax.lax.cond(refresh, roots, lambda _: (root_l, root_r), None)
        out = root_l @ x if lay.left else x
        out = out @ root_r if lay.right else out
        return out.reshape(g.shape).astype(g.dtype), left, right, root_l, root_r, diag

    return _leafwise(hp, ShampooState, "scale_by_shampoo", init_leaf, update_leaf)


class SoapState(NamedTuple):
    """State of :func:`scale_by_soap`.

    Attributes:
        mu: the first moment :math:`m`, in the original basis (the paper's
            choice), shaped like the params, in ``mu_dtype``.
        nu: the second moment :math:`v` in the eigenbasis, shaped like the
            params (with ``factored=True``, per leaf a pair of its row and
            column means: ``(..., m)`` and ``(..., n)``).
        stats_left: per leaf, the left statistic :math:`L`, or empty.
        stats_right: per leaf, :math:`R`, or empty.
        basis_left: per leaf, the eigenbasis :math:`Q_L` (columns sorted by
            eigenvalue, descending), or empty.
        basis_right: per leaf, :math:`Q_R`, or empty.
        hyperparams: the block's store (``b1``, ``b2``, ``shampoo_beta``,
            ``eps``, ``precondition_frequency`` and the step count), or
            ``EmptyState()`` when they are all handles.
    """

    mu: Any
    nu: Any
    stats_left: Any
    stats_right: Any
    basis_left: Any
    basis_right: Any
    hyperparams: HyperparamState | EmptyState


def _project(x: jax.Array, ql: jax.Array | None, qr: jax.Array | None, back: bool) -> jax.Array:
    """:math:`Q_L^\\top X Q_R` (``back=False``) or :math:`Q_L X Q_R^\\top`; ``None``: identity."""
    if ql is not None:
        x = (ql if back else _t(ql)) @ x
    if qr is not None:
        x = x @ (_t(qr) if back else qr)
    return x


def _second_moment(nu: Any, sample: jax.Array, b2, gain, factored: bool) -> Any:
    """The EMA of the squared projected gradient, or its row and column means."""
    if not factored:
        return b2 * nu + gain * sample
    rows, cols = nu
    return b2 * rows + gain * sample.mean(-1), b2 * cols + gain * sample.mean(-2)


def _expand(nu: Any, factored: bool) -> jax.Array:
    """:math:`v`, or Adafactor's rank-one :math:`r c^\\top / \\mathrm{mean}(r)` from the means."""
    if not factored:
        return nu
    rows, cols = nu
    mean = jnp.mean(rows, axis=-1, keepdims=True)
    ratio = jnp.where(mean > 0, rows / jnp.where(mean > 0, mean, 1), 0)
    return ratio[..., :, None] * cols[..., None, :]


def _permute(nu: Any, order: jax.Array, side: str, factored: bool) -> Any:
    """Reorders the second moment's rows (``"left"``) or columns to a refreshed basis."""
    if factored:
        rows, cols = nu
        if side == "left":
            return jnp.take_along_axis(rows, order, axis=-1), cols
        return rows, jnp.take_along_axis(cols, order, axis=-1)
    if side == "left":
        return jnp.take_along_axis(nu, order[..., :, None], axis=-2)
    return jnp.take_along_axis(nu, order[..., None, :], axis=-1)


def _refresh_soap(stats, bases, nu, lay, mode, edt, factored):
    """The three refresh branches: 0 keep, 1 the first basis by ``eigh``, 2 refresh."""

    def first(_):
        new = [_eigh_descending(s, edt or s.dtype)[1] if on else q for s, q, on in stats_bases]
        return (*new, nu)

    def again(_):
        new, moment = [], nu
        for (s, q, on), side in zip(stats_bases, ("left", "right")):
            if not on:
                new.append(q)
                continue
            fresh, order = _power_qr_step(s, q, edt or s.dtype)
            if mode == "eigh":
                fresh = _eigh_descending(s, edt or s.dtype)[1]
            new.append(fresh)
            moment = _permute(moment, order, side, factored)
        return (*new, moment)

    stats_bases = list(zip(stats, bases, (lay.left, lay.right)))
    return first, again


def scale_by_soap(
    b1: ScalarOrSchedule | Hyperparam = 0.95,
    b2: ScalarOrSchedule | Hyperparam = 0.95,
    shampoo_beta: ScalarOrSchedule | Hyperparam | None = None,
    eps: ScalarOrSchedule | Hyperparam = 1e-8,
    precondition_frequency: int | Hyperparam = 10,
    *,
    max_precond_dim: int = 10000,
    batching: str = "leading",
    refresh: str = "qr",
    factored: bool = False,
    mu_dtype: DTypeLike | None = None,
    stats_dtype: DTypeLike | None = None,
    eigh_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""SOAP's direction (Vyas et al., 2024): Adam in the eigenbasis of Shampoo's factors.

    With :math:`s = t - 1` (the first update only starts the statistics and
    returns zeros, as the paper's code does):

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1) G, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) (Q_L^\top G Q_R)^{\odot 2}, \quad
        u = \frac{\sqrt{1 - \beta_2^s}}{1 - \beta_1^s}\,
            Q_L \frac{Q_L^\top m Q_R}{\sqrt v + \epsilon} Q_R^\top

    then :math:`L \leftarrow \beta_s L + (1 - \beta_s) G G^\top`,
    :math:`R \leftarrow \beta_s R + (1 - \beta_s) G^\top G` (:math:`\beta_s`
    = ``shampoo_beta``, default :math:`\beta_2`). :math:`Q_L, Q_R` start as
    the eigenvectors of the first :math:`L, R` (``eigh``, eigenvalues
    descending) and are refreshed when :math:`s \bmod f = 0`: ``refresh="qr"``
    (the paper) takes one power-iteration step, :math:`Q \leftarrow
    \mathrm{QR}(L Q)` with the columns of :math:`L Q` first sorted by the
    estimates :math:`\mathrm{diag}(Q^\top L Q)` and :math:`v` permuted the same
    way; ``"eigh"`` recomputes the eigenvectors (:math:`v` permuted by the
    same estimates). :math:`m` is kept in the original basis and projected at
    each step (the paper; keeping it in the eigenbasis and rotating it at a
    refresh, as heavyball does, is the same map). ``factored=True`` keeps
    Adafactor's row and column means of :math:`v` instead (the paper's
    factorised variant). Unfactored sides are the identity; a leaf with none
    is Adam. See :func:`gradxform.soap` for the optimizer.

    Args:
        b1: :math:`\beta_1` in [0, 1).
        b2: :math:`\beta_2` in [0, 1).
        shampoo_beta: :math:`\beta_s` in [0, 1), or ``None`` for :math:`\beta_2`.
        eps: :math:`\epsilon \ge 0`, added to :math:`\sqrt v`.
        precondition_frequency: :math:`f`, an integer >= 1 (in the store).
        max_precond_dim: sides larger than this (an integer >= 1) are not factored.
        batching: ``"leading"`` or ``"flatten"`` for leaves of rank > 2.
        refresh: ``"qr"`` or ``"eigh"``.
        factored: keep only the row and column means of :math:`v` on matrix leaves.
        mu_dtype: dtype of :math:`m` (default: the statistics' dtype).
        stats_dtype: dtype of :math:`v`, the statistics and bases (default:
            float32 or the parameter's dtype when wider).
        eigh_dtype: dtype of the decompositions (default: the statistics').

    Returns:
        The block; its state is :class:`SoapState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_soap(b1=0.0, b2=0.0)
        >>> g = jnp.array([[3.0, 0.0], [0.0, -2.0]])
        >>> u, s = tx.update(g, tx.init(g))  # the first update starts the statistics
        >>> float(jnp.abs(u).max())
        0.0
        >>> u, s = tx.update(g, s)  # b2 = 0: sign(g) in the eigenbasis
        >>> [round(float(v), 4) for v in jnp.diag(u)]
        [1.0, -1.0]
    """
    max_dim = checks.integer("max_precond_dim", max_precond_dim, minimum=1)
    checks.choice("batching", batching, _BATCHING)
    checks.choice("refresh", refresh, _REFRESH)
    factored = checks.boolean("factored", factored)
    mdt = checks.optional_dtype("mu_dtype", mu_dtype)
    sdt = checks.optional_dtype("stats_dtype", stats_dtype)
    edt = checks.optional_dtype("eigh_dtype", eigh_dtype)
    specs = {"b1": b1, "b2": b2, "eps": eps, "precondition_frequency": precondition_frequency}
    if shampoo_beta is not None:
        specs["shampoo_beta"] = shampoo_beta
    hp = Hyperparams(**specs).use_count().check("eps", lower=0)
    hp.check("precondition_frequency", lower=1, integer=True)
    for name in ("b1", "b2", "shampoo_beta")[: 3 if shampoo_beta is not None else 2]:
        hp.check(name, **_DECAY).use_complement(name)
    beta_s = "b2" if shampoo_beta is None else "shampoo_beta"

    def init_leaf(p):
        lay, dt = _layout(p.shape, max_dim, batching), _stats_dtype(p, sdt)
        mu = jnp.zeros_like(p, dtype=mdt or dt)
        view = lay.view
        if factored and (lay.left or lay.right):
            nu = (jnp.zeros(view[:-1], dt), jnp.zeros((*view[:-2], view[-1]), dt))
        else:
            nu = jnp.zeros_like(p, dtype=dt).reshape(view)
        sides = [
            (_identity(view, s, dt) * 0, _identity(view, s, dt)) if on else (_empty(dt), _empty(dt))
            for s, on in (("left", lay.left), ("right", lay.right))
        ]
        return mu, nu, sides[0][0], sides[1][0], sides[0][1], sides[1][1]

    def update_leaf(g, mu, nu, left, right, ql, qr, values):
        lay, dt = _layout(g.shape, max_dim, batching), _stats_dtype(g, sdt)
        fac = factored and (lay.left or lay.right)
        x = g.astype(dt).reshape(lay.view)
        bl, br = (ql if lay.left else None), (qr if lay.right else None)
        t, first = values.count, values.count == 1
        c1, c2 = (values.complement(n).astype(dt) for n in ("b1", "b2"))
        new_mu = values["b1"].astype(dt) * mu.astype(dt).reshape(lay.view) + c1 * x
        projected = _project(x, bl, br, back=False)
        new_nu = _second_moment(nu, projected * projected, values["b2"].astype(dt), c2, fac)
        s = jnp.maximum(t - 1, 1).astype(dt)
        step = jnp.sqrt(1 - values["b2"].astype(dt) ** s) / (1 - values["b1"].astype(dt) ** s)
        den = jnp.sqrt(_expand(new_nu, fac)) + values["eps"].astype(dt)
        out = _project(_project(new_mu, bl, br, back=False) / den, bl, br, back=True) * step
        keep = lambda new, old: jnp.where(first, old, new)  # noqa: E731
        mu = keep(new_mu.reshape(g.shape), mu.astype(dt)).astype(mu.dtype)
        nu = jax.tree.map(keep, new_nu, nu)
        out = jnp.where(first, 0, out).reshape(g.shape).astype(g.dtype)
        if not (lay.left or lay.right):
            return out, mu, nu, left, right, ql, qr
        bs, cs = values[beta_s].astype(dt), values.complement(beta_s).astype(dt)
        left = bs * left + cs * _gram(x, "left") if lay.left else left
        right = bs * right + cs * _gram(x, "right") if lay.right else right
        branches = _refresh_soap((left, right), (ql, qr), nu, lay, refresh, edt, fac)
        due = (t - 1) % values["precondition_frequency"] == 0
        index = jnp.where(first, 1, jnp.where(due, 2, 0))
        keep_all = lambda _: (ql, qr, nu)  # noqa: E731
        ql, qr, nu = jax.lax.switch(index, (keep_all, *branches), None)
        return out, mu, nu, left, right, ql, qr

    return _leafwise(hp, SoapState, "scale_by_soap", init_leaf, update_leaf)


class GraftState(NamedTuple):
    """State of :func:`graft`.

    Attributes:
        magnitude: the state of the transform whose norm is kept.
        direction: the state of the transform whose direction is kept.
    """

    magnitude: Any
    direction: Any


def graft(
    magnitude: GradientTransformationExtraArgs, direction: GradientTransformationExtraArgs
) -> GradientTransformationExtraArgs:
    r"""Layer-wise grafting: each leaf takes ``direction``'s direction and ``magnitude``'s norm.

    :math:`u = d\, \|a\|_F / (\|d\|_F + 10^{-16})` per leaf, with :math:`a` and
    :math:`d` the two transforms' outputs for the same input (as distributed
    Shampoo and pytorch-optimizer's ScalableShampoo graft Shampoo onto SGD's,
    AdaGrad's or RMSProp's per-layer step size).

    Args:
        magnitude: the transform whose per-leaf norm is used (``identity()``: SGD's).
        direction: the transform whose direction is used.

    Returns:
        The block; its state is :class:`GraftState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.graft(gx.identity(), gx.scale_by_sign())
        >>> u, _ = tx.update(jnp.array([3.0, -4.0]), tx.init(jnp.zeros(2)))
        >>> [round(float(v), 4) for v in u]  # sign, rescaled to norm 5
        [3.5355, -3.5355]
    """

    def init_fn(params):
        return GraftState(magnitude.init(params), direction.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        a, ma = magnitude.update(updates, state.magnitude, params, **extra_args)
        d, md = direction.update(updates, state.direction, params, **extra_args)

        def leaf(a, d):
            na, nd = jnp.linalg.norm(a.ravel()), jnp.linalg.norm(d.ravel())
            return (d * (na / (nd + 1e-16)).astype(d.dtype)).astype(d.dtype)

        return jax.tree.map(leaf, a, d), GraftState(ma, md)

    return GradientTransformationExtraArgs(init_fn, update_fn)
