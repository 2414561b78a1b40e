r"""Sophia's blocks: a Hessian-diagonal EMA refreshed every k updates, and its floor.

Sophia's direction (Liu et al., 2023, Algorithm 3) is::

    chain(divide(ema_first_moment(b1),
                 chain(ema_hessian_diagonal(b2, update_period), curvature_floor(gamma, eps))),
          clip(clip_threshold))

that is :math:`\operatorname{clip}(m / \max(\gamma h, \epsilon), 1)`, with the
hyperparameters handles of one :class:`~gradxform.hyperparams.Hyperparams`
store. The estimates of the Hessian's diagonal come from
:mod:`gradxform.curvature` (:func:`~gradxform.curvature.hutchinson_diagonal`,
:func:`~gradxform.curvature.gauss_newton_bartlett_diagonal`), or from the
caller (the extra argument ``hessian_diag``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from gradxform import checks, curvature, tree
from gradxform.base import EmptyState, GradientTransformationExtraArgs, chain, divide
from gradxform.hyperparams import (
    Hyperparam,
    Hyperparams,
    HyperparamState,
    ScalarOrSchedule,
    increment_count,
)
from gradxform.second_order import _tree
from gradxform.transforms.clipping import clip
from gradxform.transforms.moments import bias_correct, ema_first_moment

__all__ = [
    "CurvatureFloorState",
    "EmaHessianDiagonalState",
    "curvature_floor",
    "ema_hessian_diagonal",
    "scale_by_sophia",
]

_DECAY: dict[str, Any] = {"lower": 0, "upper": 1, "upper_open": True}
_OWNER = "ema_hessian_diagonal"


def _hutchinson(params: Any, key: jax.Array, extra: dict[str, Any]) -> Any:
    """Hutchinson's estimate of the Hessian of ``value_fn`` (or optax's ``obj_fn``)."""
    value_fn = extra.pop("value_fn", None)
    value_fn = extra.pop("obj_fn", None) if value_fn is None else value_fn
    objective = _tree.objective(value_fn, extra, f"{_OWNER}(estimator='hutchinson')")
    return curvature.hutchinson_diagonal(objective, params, key)


def _gnb(params: Any, key: jax.Array, extra: dict[str, Any]) -> Any:
    """The Gauss-Newton-Bartlett estimate for the logits that ``logits_fn`` returns."""
    logits_fn = extra.pop("logits_fn", None)
    if logits_fn is None:
        what = "passed to update, as in tx.update(grads, state, params, logits_fn=f)"
        checks.fail(f"{_OWNER}(estimator='gnb'): logits_fn", what, logits_fn)
    bound = _tree.objective(logits_fn, extra, _OWNER)
    return curvature.gauss_newton_bartlett_diagonal(lambda p, _: bound(p), params, None, key)


_ESTIMATORS: dict[str, Callable[[Any, jax.Array, dict[str, Any]], Any]] = {
    "hutchinson": _hutchinson,
    "gnb": _gnb,
}


class EmaHessianDiagonalState(NamedTuple):
    """State of :func:`ema_hessian_diagonal`.

    Attributes:
        nu: the EMA :math:`h` of the Hessian-diagonal estimates (real, at least float32).
        count: the number of updates taken (int32, saturating).
        key: the PRNG key of the next estimate's probes or labels (split at each refresh).
        hyperparams: the block's store of ``decay`` and ``update_period``
            (``EmptyState()`` when both are handles).
    """

    nu: Any
    count: jax.Array  # type: ignore[assignment]  # the field, over tuple.count
    key: jax.Array
    hyperparams: HyperparamState | EmptyState


def _estimate(estimator: str, params: Any, extra: dict[str, Any]) -> Callable[[jax.Array], Any]:
    """``key -> estimate``: the ``hessian_diag`` given to update, else the estimator's."""
    if params is None:
        checks.fail(f"{_OWNER}: params", "passed to update", params)
    extra = {k: v for k, v in extra.items() if k != "hyperparams"}
    given = extra.get("hessian_diag")
    if given is not None:
        return lambda key: given
    return lambda key: _ESTIMATORS[estimator](params, key, dict(extra))


def ema_hessian_diagonal(
    decay: ScalarOrSchedule | Hyperparam = 0.99,
    update_period: int | Hyperparam = 10,
    *,
    estimator: str = "hutchinson",
    seed: int | jax.Array = 0,
    delayed: bool = False,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Sophia's curvature: an EMA of Hessian-diagonal estimates, refreshed every k updates.

    At updates :math:`t = 1, k + 1, 2k + 1, \dots` (``count % k == 0``) an
    estimate :math:`\hat h` of :math:`\operatorname{diag}(H)` at ``params``
    is folded in, :math:`h \leftarrow \beta h + (1 - \beta) \hat h` (from
    :math:`h = 0`, no bias correction); between refreshes :math:`h` is kept
    and nothing is estimated (a ``lax.cond``). The output, in each
    parameter's dtype (:math:`h` is stored at least in float32), is :math:`h` after
    this update's refresh (the paper's Algorithm 3), or before it with
    ``delayed=True`` (``optax.contrib.sophia``). The incoming updates are not
    read.

    The estimate is, in this order of precedence, the extra argument
    ``hessian_diag`` of ``update`` (a pytree shaped like the params,
    computed by the caller, e.g. with
    :func:`gradxform.curvature.gauss_newton_bartlett_diagonal`; it is read
    only at refreshes), or the block's ``estimator``:

    * ``"hutchinson"``: :func:`gradxform.curvature.hutchinson_diagonal` of
      the extra argument ``value_fn`` (or optax's name ``obj_fn``),
      ``value_fn(params, ...) -> scalar``, one probe per refresh; other extra
      arguments its signature names (a batch) are passed to it;
    * ``"gnb"``: :func:`gradxform.curvature.gauss_newton_bartlett_diagonal`
      of the extra argument ``logits_fn(params, ...) -> logits``.

    The probes and labels are drawn with the state's key, split at each refresh.

    Args:
        decay: :math:`\beta` in [0, 1): a number, a schedule or a handle.
        update_period: :math:`k \ge 1`, updates between refreshes (an integer or a handle).
        estimator: ``"hutchinson"`` or ``"gnb"``.
        seed: the first key: an integer seed or a PRNG key array.
        delayed: output :math:`h` before this update's refresh.
        dtype: dtype of :math:`h` (default: each parameter's real dtype, at
            least float32, see :func:`gradxform.tree.squares_like`).

    Returns:
        The block; its state is :class:`EmaHessianDiagonalState`.

    Raises:
        ValueError: for a decay outside [0, 1), ``update_period < 1`` or an
            unknown estimator, when built; when ``update`` is traced without
            ``params`` or without the estimator's extra argument.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.ema_hessian_diagonal(0.5, update_period=2)
        >>> x = jnp.array([1.0, 2.0])
        >>> f = lambda p: jnp.sum(p**3)  # diag(H) = 6 p, exact with any probe
        >>> state = tx.init(x)
        >>> for _ in range(3):
        ...     h, state = tx.update(x, state, x, value_fn=f)
        ...     print(h.tolist())
        [3.0, 6.0]
        [3.0, 6.0]
        [4.5, 9.0]
    """
    checks.choice("estimator", estimator, _ESTIMATORS)
    delayed = checks.boolean("delayed", delayed)
    if isinstance(seed, jax.Array):
        first_key = seed
    else:
        first_key = jax.random.PRNGKey(checks.integer("seed", seed))
    hp = Hyperparams(decay=decay, update_period=update_period)
    hp.check("decay", **_DECAY).use_complement("decay")
    hp.check("update_period", lower=1, integer=True)

    def init_fn(params):
        tree.check_real_floating(params, "params")
        nu = tree.squares_like(params, 0.0, dtype)
        return EmaHessianDiagonalState(nu, jnp.zeros([], jnp.int32), first_key, hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del updates
        values, hyper = hp.step(state.hyperparams, extra_args)
        estimate = _estimate(estimator, params, extra_args)

        def refresh(nu, key):
            key, sub = jax.random.split(key)
            new = estimate(sub)
            tree.check_structure(nu, new, "Hessian-diagonal EMA", "estimate")
            return tree.ema(values["decay"], values.complement("decay"), nu, new), key

        due = state.count % values["update_period"] == 0
        nu, key = jax.lax.cond(due, refresh, lambda nu, key: (nu, key), state.nu, state.key)
        out = jax.tree.map(lambda h, p: h.astype(p.dtype), state.nu if delayed else nu, params)
        return out, EmaHessianDiagonalState(nu, increment_count(state.count), key, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class CurvatureFloorState(NamedTuple):
    """State of :func:`curvature_floor`.

    Attributes:
        hyperparams: the block's store of ``gamma`` and ``eps`` (``EmptyState()``
            when both are handles).
    """

    hyperparams: HyperparamState | EmptyState


_FORMS = ("max", "sum")


def curvature_floor(
    gamma: ScalarOrSchedule | Hyperparam = 0.01,
    eps: ScalarOrSchedule | Hyperparam = 1e-8,
    *,
    form: str = "max",
) -> GradientTransformationExtraArgs:
    r"""Sophia's denominator: the scaled curvature, kept away from zero.

    ``form="max"``: :math:`u \leftarrow \max(\gamma u, \epsilon)` (the
    paper's Algorithm 3, ``optax.contrib.sophia``): a coordinate of negative
    or tiny curvature gets :math:`\epsilon`, so that the clip after the
    division turns its step into a sign step. ``form="sum"``:
    :math:`u \leftarrow \gamma u + \epsilon` (the authors' SophiaG code, with
    :math:`\gamma = \rho` times the batch size there); meant for estimates
    that are never negative (Gauss-Newton-Bartlett).

    Args:
        gamma: :math:`\gamma \ge 0`: a number, a schedule or a handle.
        eps: :math:`\epsilon \ge 0`: a number, a schedule or a handle.
        form: ``"max"`` or ``"sum"``.

    Returns:
        The block; its state is :class:`CurvatureFloorState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.curvature_floor(0.5, eps=0.25)
        >>> u, _ = tx.update(jnp.array([-2.0, 0.0, 4.0]), tx.init(jnp.zeros(3)))
        >>> u.tolist()
        [0.25, 0.25, 2.0]
    """
    checks.choice("form", form, _FORMS)
    hp = Hyperparams(gamma=gamma, eps=eps).check("gamma", lower=0).check("eps", lower=0)

    def apply(updates, values, params):
        def leaf(h):
            gamma, eps = (tree.to_dtype(values[name], h.dtype) for name in ("gamma", "eps"))
            return jnp.maximum(gamma * h, eps) if form == "max" else gamma * h + eps

        return jax.tree.map(leaf, updates)

    return hp.transform(apply, CurvatureFloorState)


def scale_by_sophia(
    b1: ScalarOrSchedule | Hyperparam = 0.965,
    b2: ScalarOrSchedule | Hyperparam = 0.99,
    gamma: ScalarOrSchedule | Hyperparam = 0.01,
    eps: ScalarOrSchedule | Hyperparam = 1e-8,
    clip_threshold: ScalarOrSchedule | Hyperparam | None = 1.0,
    update_period: int | Hyperparam = 10,
    *,
    estimator: str = "hutchinson",
    seed: int | jax.Array = 0,
    form: str = "max",
    bias_correction: bool = False,
    delayed: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Sophia's direction :math:`\operatorname{clip}(m / \max(\gamma h, \epsilon), c)`.

    :math:`m` the EMA of the gradients (``b1``), :math:`h` the EMA of
    Hessian-diagonal estimates refreshed every ``update_period`` updates
    (``b2``, :func:`ema_hessian_diagonal`: its extra arguments ``value_fn``,
    ``logits_fn`` or ``hessian_diag`` pass through), clipped elementwise to
    :math:`[-c, c]`. See :func:`gradxform.sophia` for the optimizer and the
    options that reproduce ``optax.contrib.sophia`` and SophiaG.

    Composition: ``chain(divide(ema_first_moment(b1) [, bias_correct(b1)],
    chain(ema_hessian_diagonal(b2, update_period), curvature_floor(gamma, eps))),
    clip(clip_threshold))``, with one store for the hyperparameters
    (no ``clip`` when ``clip_threshold`` is None).

    Args:
        b1: :math:`\beta_1` in [0, 1), the gradient EMA's decay.
        b2: :math:`\beta_2` in [0, 1), the Hessian-diagonal EMA's decay.
        gamma: :math:`\gamma \ge 0`, the scale of :math:`h` (the paper's
            :math:`\gamma`, SophiaG's :math:`\rho`).
        eps: :math:`\epsilon \ge 0`, the floor of the denominator.
        clip_threshold: :math:`c \ge 0`, or None for no clipping.
        update_period: :math:`k \ge 1`, updates between Hessian refreshes.
        estimator: ``"hutchinson"`` (extra argument ``value_fn``) or ``"gnb"``
            (extra argument ``logits_fn``), see :func:`ema_hessian_diagonal`.
        seed: the first PRNG key of the estimator (an integer or a key).
        form: ``"max"`` (:math:`\max(\gamma h, \epsilon)`) or ``"sum"``
            (:math:`\gamma h + \epsilon`), see :func:`curvature_floor`.
        bias_correction: divide :math:`m` by :math:`1 - \beta_1^t` (optax).
        delayed: divide by :math:`h` before this update's refresh (optax).
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).
        nu_dtype: dtype of :math:`h` (default: the real dtype, at least float32).

    Returns:
        Sophia's direction (before weight decay and the learning rate).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_sophia(b1=0.5, gamma=1.0)
        >>> x = jnp.array([1.0, 1.0])
        >>> u, _ = tx.update(jnp.array([4.0, -0.5]), tx.init(x), x, hessian_diag=jnp.ones(2))
        >>> u.tolist()  # m = [2, -0.25], h = 0.01: clip([200, -25], 1)
        [1.0, -1.0]
    """
    specs = {"b1": b1, "b2": b2, "gamma": gamma, "eps": eps, "update_period": update_period}
    if clip_threshold is not None:
        specs["clip_threshold"] = clip_threshold
    hp = Hyperparams(**specs)
    numerator: Any = ema_first_moment(hp["b1"], dtype=mu_dtype)
    if checks.boolean("bias_correction", bias_correction):
        numerator = chain(numerator, bias_correct(hp["b1"]))
    curvature_ema = ema_hessian_diagonal(
        hp["b2"],
        hp["update_period"],
        estimator=estimator,
        seed=seed,
        delayed=delayed,
        dtype=nu_dtype,
    )
    floor = curvature_floor(hp["gamma"], hp["eps"], form=form)
    blocks: list[Any] = [divide(numerator, chain(curvature_ema, floor))]
    if clip_threshold is not None:
        blocks.append(clip(hp["clip_threshold"]))
    return hp.chain(*blocks)
