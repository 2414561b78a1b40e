"""The second-order transforms: one iteration of a method per ``update``.

``scale_by_lbfgs``, ``scale_by_bfgs``, ``scale_by_newton`` and
``scale_by_newton_cg`` each run :func:`gradxform.second_order.iteration.step`
with their method's record (:mod:`gradxform.second_order.methods`): the
direction at ``params``, the method's first trial step, a strong-Wolfe line
search on ``value_fn``, and the model update or restart. The output is
``-t d`` (a direction to descend along, as every ``scale_by_*`` returns), so
``chain(scale_by_lbfgs(), scale_by_learning_rate(1.0))`` steps to the search's
point; :func:`gradxform.minimize` runs the same iteration, so both take the
same steps.

``update`` takes the extra arguments ``value_fn`` (the objective; the other
extra arguments it names, e.g. ``batch``, are passed on to it) and ``value``
(``f(params)``, computed if omitted); ``updates`` is the gradient at
``params`` (for complex params the conjugate of ``jax.grad``'s, optax's
convention). Apply the update unchanged (learning rate 1): the model is
updated with the step the search took.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import checks, tree
from gradxform.base import GradientTransformationExtraArgs
from gradxform.convolutions import canonical_convolutions
from gradxform.hyperparams import Hyperparams, HyperparamState
from gradxform.second_order import _tree, iteration
from gradxform.second_order import methods as meth
from gradxform.second_order import trust_region as tr
from gradxform.second_order.linesearch import Point, ZoomLinesearch

__all__ = [
    "SecondOrderState",
    "checked_linesearch",
    "scale_by_bfgs",
    "scale_by_lbfgs",
    "scale_by_newton",
    "scale_by_newton_cg",
    "scale_by_trust_region",
    "TrustRegionState",
]


class SecondOrderState(NamedTuple):
    """State of the ``scale_by_*`` second-order transforms.

    Attributes:
        model: the method's curvature model (an
            :class:`~gradxform.second_order.directions.LbfgsMemory`, a
            :class:`~gradxform.second_order.methods.BfgsModel`, or ``()`` for
            Newton's methods).
        value: the objective at the search's point (for ``value_and_grad_from_state``;
            inf before the first update).
        grad: its gradient there, shaped like the params (as ``jax.grad`` returns it).
        previous_value: the objective at the point the latest update started
            from (read by BFGS's first-step rule).
        hyperparams: the line search's ``c1``, ``c2`` and ``initial_step``.
    """

    model: Any
    value: jax.Array
    grad: Any
    previous_value: jax.Array
    hyperparams: HyperparamState


def checked_linesearch(linesearch: ZoomLinesearch | None) -> ZoomLinesearch:
    """``linesearch`` with its constants checked (one message form, see :mod:`gradxform.checks`).

    Args:
        linesearch: the search's constants; None for the defaults.

    Returns:
        The constants as Python numbers.

    Raises:
        TypeError: if ``linesearch`` is not a :class:`ZoomLinesearch`.
        ValueError: if a constant is out of range.
    """
    if linesearch is None:
        return ZoomLinesearch()
    if not isinstance(linesearch, ZoomLinesearch):
        checks.fail("linesearch", "a gx.ZoomLinesearch", linesearch, TypeError)
    c1, c2 = checks.wolfe_constants(linesearch.c1, linesearch.c2)
    return ZoomLinesearch(
        c1=c1,
        c2=c2,
        initial_step=checks.real("initial_step", linesearch.initial_step, lower=0, lower_open=True),
        max_steps=checks.integer("max_steps", linesearch.max_steps, minimum=1),
    )


def _library_layout(update_fn: Callable) -> Callable:
    """``update_fn`` with its convolutions in XLA CPU's library layout
    (:func:`~gradxform.canonical_convolutions`): the line search's and CG's
    evaluations sit in loops."""

    @functools.wraps(update_fn)
    def update(updates, state, params=None, **extra):
        return canonical_convolutions(update_fn)(updates, state, params, **extra)

    return update


def _method_transform(
    method: meth.Method, name: str, linesearch: ZoomLinesearch | None, real_only: bool
) -> GradientTransformationExtraArgs:
    linesearch = checked_linesearch(linesearch)
    hp = Hyperparams(c1=linesearch.c1, c2=linesearch.c2, initial_step=linesearch.initial_step)

    def init_fn(params):
        if real_only:
            tree.check_real_floating(params, "params")
        dtype = _tree.scalar_dtype(params)
        return SecondOrderState(  # every leaf its own buffer, so that the state can be donated
            model=method.init(params, None),
            value=jnp.full([], jnp.inf, dtype),
            grad=_tree.zeros(params),
            previous_value=jnp.full([], jnp.inf, dtype),
            hyperparams=hp.init(_tree.dtype_proxy(params)),
        )

    def update_fn(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra):
        del grad  # the gradient is `updates`
        objective, evaluate, dtype = _tree.evaluation(value_fn, extra, params, name)
        values, hyper = hp.step(state.hyperparams)
        g = _tree.cast(updates, params)
        f = evaluate(params)[0] if value is None else jnp.asarray(value).astype(dtype)
        direction = method.direction(state.model, objective, params, g).direction
        search = linesearch._replace(
            c1=values["c1"], c2=values["c2"], initial_step=values["initial_step"]
        )
        done = iteration.step(
            method,
            evaluate,
            Point(params, f, g),
            state.previous_value,
            state.model,
            direction,
            search,
        )
        taken = _tree.scale(done.size, done.direction)
        taken = _tree.select(done.accepted, taken, _tree.zeros(g))
        new_state = SecondOrderState(
            model=done.model,
            value=done.point.value,
            grad=_tree.conj(done.point.grad),
            previous_value=done.previous_value,
            hyperparams=hyper,
        )
        return _tree.neg(taken), new_state

    return GradientTransformationExtraArgs(init_fn, _library_layout(update_fn))


def scale_by_lbfgs(
    memory_size: int = 10, *, linesearch: ZoomLinesearch | None = None
) -> GradientTransformationExtraArgs:
    """``u <- -t d``: one L-BFGS iteration, ``d = -H g`` from the last ``memory_size`` pairs.

    See :func:`gradxform.lbfgs` (the rules) and
    :func:`~gradxform.second_order.methods.lbfgs_method`. The memory is a
    pytree (a leading axis of ``memory_size`` on each leaf), so sharded
    params stay sharded; complex params are vectors of ``R^2n``.

    Args:
        memory_size: the number of pairs kept (>= 1).
        linesearch: the strong-Wolfe search's constants (default ``ZoomLinesearch()``).

    Returns:
        The transform; its state is a :class:`SecondOrderState`.
    """
    memory_size = checks.integer("memory_size", memory_size, minimum=1)
    method = meth.lbfgs_method(memory_size)
    return _method_transform(method, "scale_by_lbfgs", linesearch, real_only=False)


def scale_by_bfgs(
    *, initial_scaling: bool = False, linesearch: ZoomLinesearch | None = None
) -> GradientTransformationExtraArgs:
    """``u <- -t d``: one BFGS iteration, ``d = -H g`` with the dense inverse Hessian ``H``.

    See :func:`gradxform.bfgs` and :func:`~gradxform.second_order.methods.bfgs_method`.
    Real params only (``H`` is over the flattened params).

    Args:
        initial_scaling: set ``H_0 = (s.y / y.y) I`` at the first update (N&W eq. 6.20).
        linesearch: the strong-Wolfe search's constants (default ``ZoomLinesearch()``).

    Returns:
        The transform (real params); its state is a :class:`SecondOrderState`.
    """
    method = meth.bfgs_method(checks.boolean("initial_scaling", initial_scaling))
    return _method_transform(method, "scale_by_bfgs", linesearch, real_only=True)


def scale_by_newton(*, linesearch: ZoomLinesearch | None = None) -> GradientTransformationExtraArgs:
    """``u <- -t d``: one Newton iteration with the exact Hessian of ``value_fn``.

    ``d = -H^-1 g`` where ``H`` is positive definite, else the modified step of
    :func:`~gradxform.second_order.directions.newton_direction`. See
    :func:`gradxform.newton`. Real params only.

    Args:
        linesearch: the strong-Wolfe search's constants (default ``ZoomLinesearch()``).

    Returns:
        The transform (real params, Hessian over them flattened); its state is
        a :class:`SecondOrderState` with an empty model.
    """
    return _method_transform(meth.newton_method(), "scale_by_newton", linesearch, real_only=True)


def scale_by_newton_cg(
    max_cg_steps: int = 50, *, linesearch: ZoomLinesearch | None = None
) -> GradientTransformationExtraArgs:
    """``u <- -t d``: one Newton-CG iteration, ``d`` from truncated CG on ``H d = -g``.

    Hessian-vector products of ``value_fn`` only; see :func:`gradxform.newton_cg`
    and :func:`~gradxform.second_order.directions.newton_cg_direction`. Real params only.

    Args:
        max_cg_steps: the most CG steps (Hessian-vector products) per direction.
        linesearch: the strong-Wolfe search's constants (default ``ZoomLinesearch()``).

    Returns:
        The transform (real params, matrix-free); its state is a
        :class:`SecondOrderState` with an empty model.
    """
    method = meth.newton_cg_method(checks.integer("max_cg_steps", max_cg_steps, minimum=1))
    return _method_transform(method, "scale_by_newton_cg", linesearch, real_only=True)


class TrustRegionState(NamedTuple):
    """State of :func:`scale_by_trust_region`.

    Attributes:
        radius: the trust radius for the next update.
        value: the objective at the latest trial point (inf before the first update).
        grad: its gradient there, shaped like the params.
        memory: what the next subproblem solve at the same params reads (``"exact"``:
            the last lower bound on the shift and the radius; reset where a step is taken).
        hyperparams: ``eta`` and ``max_radius``.
    """

    radius: jax.Array
    value: jax.Array
    grad: Any
    memory: Any
    hyperparams: HyperparamState


def scale_by_trust_region(
    method: str = "exact",
    *,
    eta: float = 0.15,
    initial_radius: float = 1.0,
    max_radius: float = 1000.0,
    max_cg_steps: int = 50,
) -> GradientTransformationExtraArgs:
    """``u <- -p`` if the trial ``params + p`` is accepted, else 0: one trust-region iteration.

    At ``params`` the subproblem ``min g.p + p.H p / 2, |p| <= radius`` is solved
    (``method="exact"``: Moré-Sorensen on the dense Hessian of ``value_fn``;
    ``"ncg"``: Steihaug-Toint CG on its Hessian-vector products), ``value_fn`` is
    evaluated once at ``params + p`` (the trial value reaches the transform this
    way: ``update`` calls ``value_fn``), and the step is accepted when the actual
    decrease is more than ``eta`` times the predicted one; the radius follows
    scipy's rule (:func:`~gradxform.second_order.trust_region.radius_update`). This
    is :func:`~gradxform.second_order.trust_region.trial_step`, the iteration
    ``minimize(method="trust-exact" | "trust-ncg")`` runs (which, unlike the
    transform, reuses the curvature at a point while the radius shrinks there).
    ``update`` takes ``value_fn`` (and the extra arguments it names) and
    ``value`` as the line-search transforms do. Real params only.

    Args:
        method: ``"exact"`` or ``"ncg"``.
        eta: acceptance threshold on actual over predicted decrease (``0 <= eta < 0.25``).
        initial_radius: the first radius (> 0).
        max_radius: the largest radius (>= ``initial_radius``).
        max_cg_steps: ``"ncg"``'s most Hessian-vector products per update.

    Returns:
        The transform; its state is a :class:`TrustRegionState`.
    """
    checks.choice("method", method, ("exact", "ncg"))
    eta = checks.real("eta", eta, lower=0, upper=0.25, upper_open=True)
    initial_radius = checks.real("initial_radius", initial_radius, lower=0, lower_open=True)
    max_radius = checks.real("max_radius", max_radius, lower=initial_radius)
    max_cg_steps = checks.integer("max_cg_steps", max_cg_steps, minimum=1)
    trust = tr.exact_method() if method == "exact" else tr.ncg_method(max_cg_steps)
    hp = Hyperparams(eta=eta, max_radius=max_radius)
    name = "scale_by_trust_region"

    def init_fn(params):
        tree.check_real_floating(params, "params")
        dtype = _tree.scalar_dtype(params)
        return TrustRegionState(
            radius=jnp.full([], initial_radius, dtype),
            value=jnp.full([], jnp.inf, dtype),
            grad=_tree.zeros(params),
            memory=trust.memory(dtype),
            hyperparams=hp.init(_tree.dtype_proxy(params)),
        )

    def update_fn(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra):
        del grad  # the gradient is `updates`
        objective, evaluate, dtype = _tree.evaluation(value_fn, extra, params, name)
        values, hyper = hp.step(state.hyperparams)
        x, unravel = _tree.flat_view(params)
        g = _tree.flat_view(_tree.cast(updates, params))[0]
        f = evaluate(params)[0] if value is None else jnp.asarray(value).astype(dtype)

        def flat_objective(v):
            return objective(unravel(v))

        model = trust.curvature(flat_objective, x).model
        rules = tr.TrustRegion(values["eta"], initial_radius, values["max_radius"])
        flat_vg = _tree.value_and_grad(flat_objective, dtype)
        t = tr.trial_step(
            trust, flat_objective, flat_vg, Point(x, f, g), model, state.memory, state.radius,
            rules,
        )  # fmt: skip
        taken = jnp.where(t.accepted, t.step, jnp.zeros_like(t.step))
        new_state = TrustRegionState(
            radius=t.radius,
            value=t.trial.value,
            grad=unravel(t.trial.grad),
            memory=t.memory,
            hyperparams=hyper,
        )
        return _tree.neg(unravel(taken)), new_state

    return GradientTransformationExtraArgs(init_fn, _library_layout(update_fn))
