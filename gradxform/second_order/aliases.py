"""Second-order optimizers for a training loop: one method iteration per ``update``.

Each alias needs the objective in ``update``::

    value, grad = jax.value_and_grad(f)(params)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
    params = gx.apply_updates(params, updates)

and takes the steps :func:`gradxform.minimize` takes with the same method (both
run :func:`gradxform.second_order.iteration.step`). For a whole solve in one
jitted loop use :func:`gradxform.minimize`.
"""

from __future__ import annotations

from gradxform.base import GradientTransformationExtraArgs, chain
from gradxform.second_order.transforms import (
    scale_by_bfgs,
    scale_by_lbfgs,
    scale_by_newton,
    scale_by_newton_cg,
)
from gradxform.transforms.scaling import scale_by_learning_rate

__all__ = ["bfgs", "lbfgs", "newton", "newton_cg"]


def lbfgs(
    memory_size: int = 10,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    initial_step: float = 1.0,
    max_linesearch_steps: int = 30,
) -> GradientTransformationExtraArgs:
    """L-BFGS: ``x <- x + t d``, ``d = -H g``, ``t`` meeting the strong Wolfe conditions.

    ``H`` is the BFGS recursion over the last ``memory_size`` pairs
    ``s = x_{k+1} - x_k``, ``y = g_{k+1} - g_k`` from ``H_0 = (s.y / y.y) I``
    (N&W Alg. 7.4, eq. 7.20). The first trial step is ``min(1, 1/|g|)`` while
    the memory is empty, else 1; a search that finds no decrease empties the
    memory, so the next update retries from steepest descent.

    Composition: ``chain(scale_by_lbfgs(memory_size, ...), scale_by_learning_rate(1.0))``.

    Args:
        memory_size: the number of pairs kept (>= 1).
        c1: sufficient-decrease constant of the line search (a hyperparameter).
        c2: curvature constant, ``c1 < c2 < 1`` (a hyperparameter).
        initial_step: the first trial step once the memory is filled (a hyperparameter).
        max_linesearch_steps: the most evaluations per line search.

    Returns:
        The optimizer. ``update`` needs ``params`` and the extra argument
        ``value_fn``; ``value`` is computed if omitted.

    Example:
        >>> import jax, jax.numpy as jnp, gradxform as gx
        >>> f = lambda x: jnp.sum((x - 1.0) ** 2) + jnp.sum(x**4)
        >>> opt, x = gx.lbfgs(), jnp.zeros(3)
        >>> state = opt.init(x)
        >>> for _ in range(10):
        ...     value, grad = jax.value_and_grad(f)(x)
        ...     updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        ...     x = gx.apply_updates(x, updates)
        >>> [round(float(v), 4) for v in x]
        [0.5898, 0.5898, 0.5898]
    """
    return chain(
        scale_by_lbfgs(
            memory_size,
            c1=c1,
            c2=c2,
            initial_step=initial_step,
            max_linesearch_steps=max_linesearch_steps,
        ),
        scale_by_learning_rate(1.0),
    )


def bfgs(
    *,
    initial_scaling: bool = False,
    c1: float = 1e-4,
    c2: float = 0.9,
    initial_step: float = 1.0,
    max_linesearch_steps: int = 30,
) -> GradientTransformationExtraArgs:
    """BFGS: ``x <- x + t d``, ``d = -H g``, ``H`` the dense inverse Hessian updated in O(n^2).

    ``H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T``, ``rho = 1 / y.s``
    (N&W eq. 6.17), from ``H_0 = I`` (as scipy) or, with ``initial_scaling``,
    ``(s.y / y.y) I`` at the first update (N&W eq. 6.20). The first trial step
    is ``min(1, 1/|g|)`` (its first overshoot interpolated) while ``H = H_0``,
    then ``min(1, 1.01 * 2 (f_prev - f) / -g.d)`` (scipy's guess); a search
    that finds no decrease resets ``H``.

    Composition: ``chain(scale_by_bfgs(...), scale_by_learning_rate(1.0))``.

    Args:
        initial_scaling: rescale ``H_0`` at the first update (N&W eq. 6.20).
        c1: sufficient-decrease constant of the line search (a hyperparameter).
        c2: curvature constant, ``c1 < c2 < 1`` (a hyperparameter).
        initial_step: the first trial step once ``H`` is updated (a hyperparameter).
        max_linesearch_steps: the most evaluations per line search.

    Returns:
        The optimizer (real params only); ``update`` as for :func:`lbfgs`.

    Example:
        >>> import jax, jax.numpy as jnp, gradxform as gx
        >>> f = lambda x: jnp.sum((x - 1.0) ** 2) + jnp.sum(x**4)
        >>> opt, x = gx.bfgs(), jnp.zeros(3)
        >>> state = opt.init(x)
        >>> for _ in range(10):
        ...     value, grad = jax.value_and_grad(f)(x)
        ...     updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        ...     x = gx.apply_updates(x, updates)
        >>> [round(float(v), 4) for v in x]
        [0.5898, 0.5898, 0.5898]
    """
    return chain(
        scale_by_bfgs(
            initial_scaling=initial_scaling,
            c1=c1,
            c2=c2,
            initial_step=initial_step,
            max_linesearch_steps=max_linesearch_steps,
        ),
        scale_by_learning_rate(1.0),
    )


def newton(
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    initial_step: float = 1.0,
    max_linesearch_steps: int = 30,
) -> GradientTransformationExtraArgs:
    """Newton's method: ``x <- x + t d``, ``d = -H^-1 g`` with the exact Hessian.

    Where ``H`` is not safely positive definite,
    ``d = -V diag(1 / max(|lam|, delta)) V^T g`` plus the eigenvector of a
    negative ``lam_min`` signed downhill, so saddles and maxima are left
    (:func:`~gradxform.second_order.directions.newton_direction`). ``H`` is
    the dense forward-over-reverse Hessian of ``value_fn`` over the flattened
    params, O(n) gradient evaluations and an O(n^3) factorisation per update.

    Composition: ``chain(scale_by_newton(...), scale_by_learning_rate(1.0))``.

    Args:
        c1: sufficient-decrease constant of the line search (a hyperparameter).
        c2: curvature constant, ``c1 < c2 < 1`` (a hyperparameter).
        initial_step: the first trial step (a hyperparameter).
        max_linesearch_steps: the most evaluations per line search.

    Returns:
        The optimizer (real params only); ``update`` as for :func:`lbfgs`.

    Example:
        >>> import jax, jax.numpy as jnp, gradxform as gx
        >>> f = lambda x: jnp.sum((x - 1.0) ** 2) + jnp.sum(x**4)
        >>> opt, x = gx.newton(), jnp.zeros(3)
        >>> state = opt.init(x)
        >>> for _ in range(6):
        ...     value, grad = jax.value_and_grad(f)(x)
        ...     updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        ...     x = gx.apply_updates(x, updates)
        >>> [round(float(v), 4) for v in x]
        [0.5898, 0.5898, 0.5898]
    """
    return chain(
        scale_by_newton(
            c1=c1, c2=c2, initial_step=initial_step, max_linesearch_steps=max_linesearch_steps
        ),
        scale_by_learning_rate(1.0),
    )


def newton_cg(
    max_cg_steps: int = 50,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    initial_step: float = 1.0,
    max_linesearch_steps: int = 30,
) -> GradientTransformationExtraArgs:
    """Newton-CG: ``x <- x + t d``, ``d`` from truncated CG on ``H d = -g``.

    CG stops once ``|H d + g| <= min(0.5, sqrt|g|) |g|``, after
    ``max_cg_steps`` Hessian-vector products, or at negative curvature
    (N&W Alg. 7.1); no Hessian is formed.

    Composition: ``chain(scale_by_newton_cg(max_cg_steps, ...), scale_by_learning_rate(1.0))``.

    Args:
        max_cg_steps: the most CG steps per update (>= 1).
        c1: sufficient-decrease constant of the line search (a hyperparameter).
        c2: curvature constant, ``c1 < c2 < 1`` (a hyperparameter).
        initial_step: the first trial step (a hyperparameter).
        max_linesearch_steps: the most evaluations per line search.

    Returns:
        The optimizer (real params only); ``update`` as for :func:`lbfgs`.

    Example:
        >>> import jax, jax.numpy as jnp, gradxform as gx
        >>> f = lambda x: jnp.sum((x - 1.0) ** 2) + jnp.sum(x**4)
        >>> opt, x = gx.newton_cg(), jnp.zeros(3)
        >>> state = opt.init(x)
        >>> for _ in range(6):
        ...     value, grad = jax.value_and_grad(f)(x)
        ...     updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        ...     x = gx.apply_updates(x, updates)
        >>> [round(float(v), 4) for v in x]
        [0.5898, 0.5898, 0.5898]
    """
    return chain(
        scale_by_newton_cg(
            max_cg_steps,
            c1=c1,
            c2=c2,
            initial_step=initial_step,
            max_linesearch_steps=max_linesearch_steps,
        ),
        scale_by_learning_rate(1.0),
    )
