"""One iteration of a second-order method, written once for the transforms and ``minimize``.

From a point ``x`` with value ``f`` and gradient ``g``, a curvature model and
the method's direction ``d`` there: safeguard ``d``, choose the first trial
step, run the strong-Wolfe :func:`~gradxform.second_order.linesearch.zoom_search`,
and either accept ``x + t d`` (updating the model with ``s = t d``,
``y = g(x + t d) - g``) or stay at ``x`` (and let the method restart its
model). :func:`step` is that iteration; the ``scale_by_*`` transforms call it
once per ``update`` and :func:`gradxform.minimize` once per loop iteration.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.second_order import _tree
from gradxform.second_order.linesearch import Point, ZoomLinesearch, zoom_search
from gradxform.second_order.methods import FirstStep, Method

__all__ = ["Step", "step"]


class Step(NamedTuple):
    """What one iteration did.

    Attributes:
        point: the new :class:`~gradxform.second_order.linesearch.Point` (the
            old one where the search failed).
        model: the curvature model after the step (updated, kept or reset).
        previous_value: ``f`` at the iterate before ``point`` (for the next
            first-step rule).
        size: the accepted step size ``t`` (0 where the search failed).
        direction: the direction searched, so the step is ``size * direction``.
        accepted: the search decreased ``f`` at a finite point.
        restarted: the search failed and the method reset its model.
        finite: the value and gradient at the search's point are finite.
        num_evals: evaluations made by the search.
    """

    point: Point
    model: Any
    previous_value: jax.Array
    size: jax.Array
    direction: Any
    accepted: jax.Array
    restarted: jax.Array
    finite: jax.Array
    num_evals: jax.Array


def _pair(start: Point, end: Point, t: jax.Array, d: Any, model_dtype) -> tuple[Any, Any]:
    """``(s, y)``: ``s = t d`` in the iterate's precision; with a wider model (float64
    accumulation) ``s`` is the difference of the iterates actually taken, rounded as they are."""
    if model_dtype is None:
        return _tree.scale(t, d), _tree.sub(end.grad, start.grad)

    def wide(v):
        return jax.tree.map(lambda leaf: leaf.astype(model_dtype), v)

    return (
        _tree.sub(wide(end.x), wide(start.x)),
        _tree.sub(wide(end.grad), wide(start.grad)),
    )


def step(
    method: Method,
    value_and_grad,
    point: Point,
    previous_value: jax.Array,
    model: Any,
    direction: Any,
    search: ZoomLinesearch,
    model_dtype=None,
) -> Step:
    """One iteration of ``method`` from ``point`` along the method's ``direction``.

    Args:
        method: the method's record.
        value_and_grad: ``x -> (f(x), gradient)`` as :class:`Point` holds them.
        point: the current iterate.
        previous_value: ``f`` at the iterate before it (inf at the start).
        model: the method's curvature model at ``point``.
        direction: ``method.direction(model, f, x, g).direction``.
        search: the line search's constants (numbers, or traced hyperparameters).
        model_dtype: the model's dtype where it is wider than the params'
            (``minimize``'s float64 accumulation), else None.

    Returns:
        A :class:`Step`.
    """
    dtype = point.value.dtype
    slope = _tree.inner(point.grad, direction, dtype)
    d = method.safeguard(direction, point.grad, slope)
    fresh = method.is_fresh(model)
    context = FirstStep(
        initial_step=jnp.asarray(search.initial_step).astype(dtype),
        fresh=fresh,
        grad_norm=_tree.norm(point.grad, dtype),
        slope=slope,
        value=point.value,
        previous_value=previous_value,
    )
    t0, interpolate = method.first_step(context)
    ls = zoom_search(
        value_and_grad,
        point,
        d,
        initial_step=jnp.asarray(t0).astype(dtype),
        c1=search.c1,
        c2=search.c2,
        max_steps=search.max_steps,
        interpolate_first_overshoot=interpolate,
    )
    reached = Point(_tree.axpy(ls.step, d, point.x), ls.value, ls.grad)
    finite = jnp.isfinite(ls.value) & _tree.all_finite(ls.grad)
    accepted = ls.decreased & finite
    updated = method.update(model, *_pair(point, reached, ls.step, d, model_dtype))
    model, restarted = method.restart(_tree.select(accepted, updated, model), ~accepted & finite)
    return Step(
        point=_tree.select(accepted, reached, point),
        model=model,
        previous_value=jnp.where(accepted, point.value, previous_value),
        size=jnp.where(accepted, ls.step, 0),
        direction=d,
        accepted=accepted,
        restarted=restarted,
        finite=finite,
        num_evals=ls.num_evals,
    )
