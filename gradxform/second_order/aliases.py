"""Second-order optimizers for a training loop: one method iteration per ``update``.

Each alias needs the objective in ``update``::

    value, grad = jax.value_and_grad(f)(params)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
    params = gx.apply_updates(params, updates)

and takes the steps :func:`gradxform.minimize` takes with the same method (both
run :func:`gradxform.second_order.iteration.step`). The search's ``c1``,
``c2`` and ``initial_step`` (see :class:`~gradxform.ZoomLinesearch`) are
hyperparameters in the state. For a whole solve in one jitted loop use
:func:`gradxform.minimize`.
"""

from __future__ import annotations

from gradxform.base import GradientTransformationExtraArgs, chain
from gradxform.second_order.linesearch import ZoomLinesearch
from gradxform.second_order.transforms import (
    scale_by_bfgs,
    scale_by_lbfgs,
    scale_by_newton,
    scale_by_newton_cg,
    scale_by_trust_region,
)
from gradxform.transforms.scaling import scale_by_learning_rate

__all__ = ["bfgs", "lbfgs", "newton", "newton_cg", "trust_exact", "trust_ncg"]


def lbfgs(
    memory_size: int = 10, *, linesearch: ZoomLinesearch | None = None
) -> GradientTransformationExtraArgs:
    """L-BFGS: ``x <- x + t d``, ``d = -H g``, ``t`` meeting the strong Wolfe conditions.

    ``H`` is the BFGS recursion over the last ``memory_size`` pairs
    ``s = x_{k+1} - x_k``, ``y = g_{k+1} - g_k`` from ``H_0 = (s.y / y.y) I``
    (N&W Alg. 7.4, eq. 7.20). The first trial step is ``min(1, 1/|g|)`` while
    the memory is empty, else 1; a search that finds no decrease empties the
    memory, so the next update retries from steepest descent.

    Composition: ``chain(scale_by_lbfgs(memory_size, linesearch=linesearch),
    scale_by_learning_rate(1.0))``.

    Args:
        memory_size: the number of pairs kept (>= 1).
        linesearch: the search's constants (default ``ZoomLinesearch()``:
            ``c1=1e-4``, ``c2=0.9``, ``initial_step=1``, ``max_steps=30``).

    Returns:
        The optimizer. ``update`` needs ``params`` and the extra argument
        ``value_fn``; ``value`` is computed if omitted.

    Example:
        >>> import jax, jax.numpy as jnp, gradxform as gx, optax
        >>> f = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2  # Rosenbrock
        >>> opt, x = gx.lbfgs(), jnp.array([-1.2, 1.0])
        >>> state = opt.init(x)
        >>> value_and_grad = optax.value_and_grad_from_state(f)  # reuses the search's last point
        >>> @jax.jit  # one compilation (an update outside jit traces its line search anew)
        ... def step(x, state):
        ...     value, grad = value_and_grad(x, state=state)
        ...     updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        ...     return gx.apply_updates(x, updates), state
        >>> for _ in range(40):
        ...     x, state = step(x, state)
        >>> [round(float(v), 4) for v in x]
        [1.0, 1.0]
    """
    return chain(scale_by_lbfgs(memory_size, linesearch=linesearch), scale_by_learning_rate(1.0))


def bfgs(
    *, initial_scaling: bool = False, linesearch: ZoomLinesearch | None = None
) -> GradientTransformationExtraArgs:
    """BFGS: ``x <- x + t d``, ``d = -H g``, ``H`` the dense inverse Hessian updated in O(n^2).

    ``H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T``, ``rho = 1 / y.s``
    (N&W eq. 6.17), from ``H_0 = I`` (as scipy) or, with ``initial_scaling``,
    ``(s.y / y.y) I`` at the first update (N&W eq. 6.20). The first trial step
    is ``min(1, 1/|g|)`` (its first overshoot interpolated) while ``H = H_0``,
    then ``min(1, 1.01 * 2 (f_prev - f) / -g.d)`` (scipy's guess); a search
    that finds no decrease resets ``H``.

    Composition: ``chain(scale_by_bfgs(initial_scaling=..., linesearch=...),
    scale_by_learning_rate(1.0))``.

    Args:
        initial_scaling: rescale ``H_0`` at the first update (N&W eq. 6.20).
        linesearch: the search's constants (default ``ZoomLinesearch()``).

    Returns:
        The optimizer (real params only); ``update`` as for :func:`lbfgs`.

    Example:
        >>> import jax, jax.numpy as jnp, gradxform as gx
        >>> A = jnp.array([[3.0, 1.0], [1.0, 2.0]])
        >>> f = lambda x: 0.5 * x @ A @ x - x.sum()
        >>> opt = gx.bfgs()
        >>> @jax.jit
        ... def step(x, state):
        ...     value, grad = jax.value_and_grad(f)(x)
        ...     updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        ...     return gx.apply_updates(x, updates), state
        >>> x = jnp.zeros(2)
        >>> state = opt.init(x)
        >>> for _ in range(5):
        ...     x, state = step(x, state)
        >>> [round(float(v), 4) for v in x]  # A^-1 (1, 1)
        [0.2, 0.4]
    """
    transform = scale_by_bfgs(initial_scaling=initial_scaling, linesearch=linesearch)
    return chain(transform, scale_by_learning_rate(1.0))


def newton(*, linesearch: ZoomLinesearch | None = None) -> GradientTransformationExtraArgs:
    """Newton's method: ``x <- x + t d``, ``d = -H^-1 g`` with the exact Hessian.

    Where ``H`` is not safely positive definite,
    ``d = -V diag(1 / max(|lam|, delta)) V^T g`` plus the eigenvector of a
    negative ``lam_min`` signed downhill, so saddles and maxima are left
    (:func:`~gradxform.second_order.directions.newton_direction`). ``H`` is
    the dense forward-over-reverse Hessian of ``value_fn`` over the flattened
    params: O(n) gradient evaluations and an O(n^3) factorisation per update.

    Composition: ``chain(scale_by_newton(linesearch=linesearch), scale_by_learning_rate(1.0))``.

    Args:
        linesearch: the search's constants (default ``ZoomLinesearch()``).

    Returns:
        The optimizer (real params only); ``update`` as for :func:`lbfgs`.

    Example:
        >>> import jax, jax.numpy as jnp, gradxform as gx
        >>> loss = lambda p: jnp.sum((p["w"] - 2.0) ** 4) + (p["b"] + 1.0) ** 2
        >>> opt, params = gx.newton(), {"w": jnp.zeros(2), "b": jnp.array(0.0)}
        >>> state = opt.init(params)
        >>> @jax.jit
        ... def step(params, state):
        ...     value, grad = jax.value_and_grad(loss)(params)
        ...     updates, state = opt.update(
        ...         grad, state, params, value=value, grad=grad, value_fn=loss
        ...     )
        ...     return gx.apply_updates(params, updates), state
        >>> for _ in range(12):
        ...     params, state = step(params, state)
        >>> round(float(params["b"]), 4), [round(float(v), 2) for v in params["w"]]
        (-1.0, [1.98, 1.98])
    """
    return chain(scale_by_newton(linesearch=linesearch), scale_by_learning_rate(1.0))


def newton_cg(
    max_cg_steps: int = 50, *, linesearch: ZoomLinesearch | None = None
) -> GradientTransformationExtraArgs:
    """Newton-CG: ``x <- x + t d``, ``d`` from truncated CG on ``H d = -g``.

    CG stops once ``|H d + g| <= min(0.5, sqrt|g|) |g|``, after
    ``max_cg_steps`` Hessian-vector products, or at negative curvature
    (N&W Alg. 7.1); no Hessian is formed.

    Composition: ``chain(scale_by_newton_cg(max_cg_steps, linesearch=linesearch),
    scale_by_learning_rate(1.0))``.

    Args:
        max_cg_steps: the most CG steps per update (>= 1).
        linesearch: the search's constants (default ``ZoomLinesearch()``).

    Returns:
        The optimizer (real params only); ``update`` as for :func:`lbfgs`.

    Example:
        Extra arguments of ``update`` that ``value_fn`` names (a data batch)
        reach it at every trial point:

        >>> import jax, jax.numpy as jnp, gradxform as gx
        >>> def mse(w, batch):
        ...     inputs, targets = batch
        ...     return jnp.mean((inputs @ w - targets) ** 2)
        >>> inputs = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> batch = (inputs, inputs @ jnp.array([2.0, -1.0]))
        >>> opt, w = gx.newton_cg(), jnp.zeros(2)
        >>> state = opt.init(w)
        >>> @jax.jit
        ... def step(w, state, batch):
        ...     value, grad = jax.value_and_grad(mse)(w, batch)
        ...     updates, state = opt.update(
        ...         grad, state, w, value=value, grad=grad, value_fn=mse, batch=batch
        ...     )
        ...     return gx.apply_updates(w, updates), state
        >>> for _ in range(6):
        ...     w, state = step(w, state, batch)
        >>> [round(float(v), 4) for v in w]
        [2.0, -1.0]
    """
    transform = scale_by_newton_cg(max_cg_steps, linesearch=linesearch)
    return chain(transform, scale_by_learning_rate(1.0))


def trust_exact(
    *, eta: float = 0.15, initial_radius: float = 1.0, max_radius: float = 1000.0
) -> GradientTransformationExtraArgs:
    """Trust-region Newton with the exact (Moré-Sorensen) subproblem: ``x <- x + p``.

    ``p`` minimises ``g.p + p.H p / 2`` over ``|p| <= radius`` with the dense
    Hessian of ``value_fn`` (scipy's ``trust-exact`` iteration,
    :func:`~gradxform.second_order.trust_subproblem.more_sorensen_subproblem`, hard case
    included); ``f(x + p)`` is evaluated once per update and the step
    kept when ``(f(x) - f(x + p)) / (m(0) - m(p)) > eta``. The radius shrinks to a
    quarter below ratio 1/4 and doubles (to ``max_radius``) above 3/4 on the
    boundary (scipy's rule). A rejected update returns zeros and a smaller radius.

    Composition: ``chain(scale_by_trust_region("exact", ...), scale_by_learning_rate(1.0))``.

    Args:
        eta: acceptance threshold (``0 <= eta < 0.25``).
        initial_radius: the first radius (> 0).
        max_radius: the largest radius.

    Returns:
        The optimizer (real params only); ``update`` as for :func:`lbfgs`.

    Example:
        >>> import jax, jax.numpy as jnp, gradxform as gx
        >>> loss = lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2
        >>> opt, x = gx.trust_exact(), jnp.array([-1.2, 1.0])
        >>> state = opt.init(x)
        >>> @jax.jit
        ... def step(x, state):
        ...     value, grad = jax.value_and_grad(loss)(x)
        ...     updates, state = opt.update(grad, state, x, value=value, value_fn=loss)
        ...     return gx.apply_updates(x, updates), state
        >>> for _ in range(40):
        ...     x, state = step(x, state)
        >>> [round(float(v), 4) for v in x]
        [1.0, 1.0]
    """
    transform = scale_by_trust_region(
        "exact", eta=eta, initial_radius=initial_radius, max_radius=max_radius
    )
    return chain(transform, scale_by_learning_rate(1.0))


def trust_ncg(
    max_cg_steps: int = 50,
    *,
    eta: float = 0.15,
    initial_radius: float = 1.0,
    max_radius: float = 1000.0,
) -> GradientTransformationExtraArgs:
    """Trust-region Newton-CG (Steihaug-Toint): ``x <- x + p`` from truncated CG in the region.

    As :func:`trust_exact`, with ``p`` from CG on Hessian-vector products of
    ``value_fn`` (no Hessian formed): CG stops at the residual tolerance
    ``min(0.5, sqrt|g|) |g|``, at the boundary, or at negative curvature, which it
    follows to the boundary (:func:`~gradxform.second_order.trust_subproblem.steihaug_subproblem`).

    Composition: ``chain(scale_by_trust_region("ncg", ...), scale_by_learning_rate(1.0))``.

    Args:
        max_cg_steps: the most Hessian-vector products per update (>= 1).
        eta: acceptance threshold (``0 <= eta < 0.25``).
        initial_radius: the first radius (> 0).
        max_radius: the largest radius.

    Returns:
        The optimizer (real params only); ``update`` as for :func:`lbfgs`.
    """
    transform = scale_by_trust_region(
        "ncg", eta=eta, initial_radius=initial_radius, max_radius=max_radius,
        max_cg_steps=max_cg_steps,
    )  # fmt: skip
    return chain(transform, scale_by_learning_rate(1.0))
