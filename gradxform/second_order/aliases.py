"""Second-order optimizers for a training loop: a direction, the step sign, a line search.

Each alias needs the extra arguments of the line search in ``update``::

    value, grad = jax.value_and_grad(f)(params)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
    params = gx.apply_updates(params, updates)

For a whole solve in one jitted loop use :func:`gradxform.minimize`.
"""

from __future__ import annotations

from gradxform.base import GradientTransformationExtraArgs, chain
from gradxform.second_order.directions import (
    scale_by_bfgs,
    scale_by_lbfgs,
    scale_by_newton,
    scale_by_newton_cg,
)
from gradxform.second_order.linesearch import scale_by_zoom_linesearch
from gradxform.transforms.scaling import scale_by_learning_rate

__all__ = ["bfgs", "lbfgs", "newton", "newton_cg"]


def lbfgs(
    memory_size: int = 10, *, max_linesearch_steps: int = 30
) -> GradientTransformationExtraArgs:
    """L-BFGS: ``x <- x - t H g``, ``H`` from the last ``memory_size`` steps, ``t`` strong Wolfe.

    Composition: ``chain(scale_by_lbfgs(memory_size), scale_by_learning_rate(1.0),
    scale_by_zoom_linesearch())``.
    """
    return chain(
        scale_by_lbfgs(memory_size),
        scale_by_learning_rate(1.0),
        scale_by_zoom_linesearch(max_linesearch_steps),
    )


def bfgs(*, max_linesearch_steps: int = 30) -> GradientTransformationExtraArgs:
    """BFGS: ``x <- x - t H g`` with the dense inverse Hessian updated in O(n^2).

    Composition: ``chain(scale_by_bfgs(), scale_by_learning_rate(1.0),
    scale_by_zoom_linesearch())``.
    """
    return chain(
        scale_by_bfgs(), scale_by_learning_rate(1.0), scale_by_zoom_linesearch(max_linesearch_steps)
    )


def newton(*, max_linesearch_steps: int = 30) -> GradientTransformationExtraArgs:
    """Newton's method ``x <- x - t H^-1 g`` (exact Hessian, modified to descend at saddles).

    Composition: ``chain(scale_by_newton(), scale_by_learning_rate(1.0),
    scale_by_zoom_linesearch())``.
    """
    return chain(
        scale_by_newton(),
        scale_by_learning_rate(1.0),
        scale_by_zoom_linesearch(max_linesearch_steps),
    )


def newton_cg(
    max_cg_steps: int = 50, *, max_linesearch_steps: int = 30
) -> GradientTransformationExtraArgs:
    """Newton-CG: the Newton step from truncated CG with Hessian-vector products.

    Composition: ``chain(scale_by_newton_cg(max_cg_steps), scale_by_learning_rate(1.0),
    scale_by_zoom_linesearch())``.
    """
    return chain(
        scale_by_newton_cg(max_cg_steps),
        scale_by_learning_rate(1.0),
        scale_by_zoom_linesearch(max_linesearch_steps),
    )
