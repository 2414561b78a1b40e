"""Each second-order method as one record of pure functions.

A :class:`Method` says everything that distinguishes L-BFGS, BFGS, Newton and
Newton-CG: the curvature model it starts from, the direction it takes, how a
step updates the model, the first trial step of the line search, what it does
after a failed search, and when a point with a small gradient may end a solve.
The iteration that uses them (:func:`gradxform.second_order.iteration.step`)
is written once, and both the ``scale_by_*`` transforms and
:func:`gradxform.minimize` run it, so a training loop driving
:func:`gradxform.lbfgs` takes the steps ``minimize(method="lbfgs")`` takes.

Every function works on pytrees (a flat vector is a pytree of one leaf).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import curvature
from gradxform.second_order import _tree
from gradxform.second_order import directions as dirs

__all__ = [
    "BfgsModel",
    "Direction",
    "FirstStep",
    "Method",
    "bfgs_method",
    "lbfgs_method",
    "newton_cg_method",
    "newton_method",
]


class Direction(NamedTuple):
    """A method's direction at a point, with what computing it cost.

    Attributes:
        direction: the search direction ``d``, shaped like the params.
        stationary: True if a point whose gradient meets the tolerance may end
            a solve there (Newton: no eigenvalue below ``-delta``, so never at
            a saddle or maximum; the others: always True).
        hessians: dense Hessians computed (int32).
        hvps: Hessian-vector products computed (int32).
    """

    direction: Any
    stationary: jax.Array
    hessians: jax.Array
    hvps: jax.Array


class FirstStep(NamedTuple):
    """What the first-trial-step rule of a method may look at.

    Attributes:
        initial_step: the configured first trial step (usually 1).
        fresh: the curvature model holds no information yet (start or reset).
        grad_norm: ``|g|`` at the current point.
        slope: ``Re<g, d>`` for the direction the method proposed.
        value: ``f`` at the current point.
        previous_value: ``f`` at the previous accepted point (inf at the start).
    """

    initial_step: jax.Array
    fresh: jax.Array
    grad_norm: jax.Array
    slope: jax.Array
    value: jax.Array
    previous_value: jax.Array


class Method(NamedTuple):
    """One second-order method: the pure functions its transform and ``minimize`` share.

    Attributes:
        name: the method's name, as :func:`gradxform.minimize` spells it.
        init: ``(params, dtype) -> model``, the empty curvature model for
            parameters shaped like ``params`` (``dtype`` None: the params').
        direction: ``(model, objective, x, g) -> Direction`` at the point ``x``
            with gradient ``g``; ``objective`` is ``f`` (for Hessians).
        update: ``(model, s, y) -> model`` after an accepted step ``s`` that
            changed the gradient by ``y``.
        is_fresh: ``model -> bool``, True while the model holds no curvature.
        first_step: ``FirstStep -> (t0, interpolate_first_overshoot)``, the
            line search's first trial and whether its first overshoot is
            interpolated (see :func:`~gradxform.second_order.linesearch.zoom_search`).
        safeguard: ``(d, g, slope) -> d``, the direction actually searched.
        restart: ``(model, failed) -> (model, restarted)`` after a search that
            found no decrease: a quasi-Newton model is reset (and the next
            search starts from steepest descent); a failure with a fresh
            model, or for Newton, is final.
        stall_limit: iterations without a new best value or gradient norm
            after which :func:`gradxform.minimize` reports a stall.
    """

    name: str
    init: Callable[[Any, Any], Any]
    direction: Callable[[Any, Callable, Any, Any], Direction]
    update: Callable[[Any, Any, Any], Any]
    is_fresh: Callable[[Any], jax.Array]
    first_step: Callable[[FirstStep], tuple[jax.Array, Any]]
    safeguard: Callable[[Any, Any, jax.Array], Any]
    restart: Callable[[Any, jax.Array], tuple[Any, jax.Array]]
    stall_limit: int


# --- rules shared between methods --------------------------------------------------------


def _no_counts() -> tuple[jax.Array, jax.Array]:
    return jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32)


def _capped_first_step(ctx: FirstStep) -> jax.Array:
    """``min(initial_step, 1 / |g|)`` while the model is fresh (``H = I`` has no scale)."""
    return jnp.where(ctx.fresh, jnp.minimum(ctx.initial_step, 1 / ctx.grad_norm), ctx.initial_step)


def _plain_first_step(ctx: FirstStep) -> tuple[jax.Array, bool]:
    return ctx.initial_step, False


def _steepest_descent_fallback(d: Any, g: Any, slope: jax.Array) -> Any:
    """``d`` if it descends (``Re<g, d> < 0``), else ``-g``."""
    return _tree.select(slope < 0, d, _tree.neg(g))


def _keep_direction(d: Any, g: Any, slope: jax.Array) -> Any:
    del g, slope
    return d


def _no_restart(model: Any, failed: jax.Array) -> tuple[Any, jax.Array]:
    del failed
    return model, jnp.array(False)


def _unchanged(model: Any, s: Any, y: Any) -> Any:
    del s, y
    return model


def _never_fresh(model: Any) -> jax.Array:
    del model
    return jnp.array(False)


def _model_dtype_like(g: Any, like: Any) -> Any:
    return jax.tree.map(lambda v, leaf: v.astype(leaf.dtype), g, like)


# --- L-BFGS ---------------------------------------------------------------------------


def lbfgs_method(memory_size: int = 10) -> Method:
    """L-BFGS with the last ``memory_size`` pairs: ``d = -H g`` by the two-loop recursion.

    First trial step ``min(1, 1/|g|)`` while no pair is stored, else 1; a
    failed search empties the memory (the retry is steepest descent).

    Args:
        memory_size: the number of pairs kept (a Python int >= 1).

    Returns:
        The :class:`Method`.
    """

    def init(params, dtype=None):
        return dirs.lbfgs_init(params, memory_size, dtype)

    def direction(model, objective, x, g):
        del objective, x
        q = _model_dtype_like(g, jax.tree.map(lambda leaf: leaf[0], model.s))
        d = _tree.neg(dirs.lbfgs_two_loop(model, q))
        return Direction(_tree.cast(d, g), jnp.array(True), *_no_counts())

    def restart(model, failed):
        retry = failed & (model.num_pairs > 0)
        return model._replace(num_pairs=jnp.where(retry, 0, model.num_pairs)), retry

    return Method(
        name="lbfgs",
        init=init,
        direction=direction,
        update=dirs.lbfgs_update,
        is_fresh=lambda model: model.num_pairs == 0,
        first_step=lambda ctx: (_capped_first_step(ctx), False),
        safeguard=_steepest_descent_fallback,
        restart=restart,
        stall_limit=25,
    )


# --- BFGS -----------------------------------------------------------------------------


class BfgsModel(NamedTuple):
    """The dense BFGS model.

    Attributes:
        inverse_hessian: the ``(n, n)`` inverse Hessian approximation over the
            flattened params (``I`` at the start, as scipy).
        num_steps: accepted steps since the start or the latest reset.
    """

    inverse_hessian: jax.Array
    num_steps: jax.Array


def bfgs_method(initial_scaling: bool = False) -> Method:
    """BFGS with a dense inverse Hessian updated in O(n^2): ``d = -H g``.

    ``H_0 = I`` (as scipy), or with ``initial_scaling`` ``H_0 = (s.y / y.y) I``
    set at the first update (N&W eq. 6.20). The first trial step is
    ``min(1, 1/|g|)`` while ``H = H_0``, with its first overshoot
    interpolated; later it is ``min(1, 1.01 * 2 (f_prev - f) / -slope)``, the
    step a quadratic fitted to the last decrease predicts (scipy's guess). A
    failed search resets ``H`` (the retry is steepest descent).

    Args:
        initial_scaling: rescale ``H_0`` at the first update (N&W eq. 6.20).

    Returns:
        The :class:`Method`.
    """

    def init(params, dtype=None):
        if dtype is None:
            dtype = jnp.result_type(*(leaf.dtype for leaf in jax.tree.leaves(params)))
        n = _tree.size(params)
        return BfgsModel(jnp.eye(n, dtype=dtype), jnp.zeros([], jnp.int32))

    def direction(model, objective, x, g):
        del objective, x
        flat, unflatten = _tree.flat_view(g)
        H = model.inverse_hessian
        d = -(H @ flat.astype(H.dtype))
        return Direction(unflatten(d.astype(flat.dtype)), jnp.array(True), *_no_counts())

    def update(model, s, y):
        H = model.inverse_hessian
        s, y = (_tree.flat_view(v)[0].astype(H.dtype) for v in (s, y))
        first = (model.num_steps == 0) if initial_scaling else False
        return BfgsModel(dirs.bfgs_inverse_update(H, s, y, first), model.num_steps + 1)

    def first_step(ctx):
        t0 = _capped_first_step(ctx)
        guess = 1.01 * 2 * (ctx.previous_value - ctx.value) / -ctx.slope
        use = jnp.isfinite(guess) & (guess > 0) & ~ctx.fresh
        return jnp.where(use, jnp.minimum(t0, guess), t0), ctx.fresh

    def restart(model, failed):
        retry = failed & (model.num_steps > 0)
        H = model.inverse_hessian
        eye = jnp.eye(H.shape[0], dtype=H.dtype)
        return BfgsModel(jnp.where(retry, eye, H), jnp.where(retry, 0, model.num_steps)), retry

    return Method(
        name="bfgs",
        init=init,
        direction=direction,
        update=update,
        is_fresh=lambda model: model.num_steps == 0,
        first_step=first_step,
        safeguard=_steepest_descent_fallback,
        restart=restart,
        stall_limit=25,
    )


# --- Newton and Newton-CG --------------------------------------------------------------


def _no_model(params: Any, dtype: Any = None) -> tuple:
    del params, dtype
    return ()


def _modelless(name: str, direction: Callable, safeguard: Callable) -> Method:
    """A method without a curvature model: first trial step 1, no restart, stall limit 5."""
    return Method(
        name=name,
        init=_no_model,
        direction=direction,
        update=_unchanged,
        is_fresh=_never_fresh,
        first_step=_plain_first_step,
        safeguard=safeguard,
        restart=_no_restart,
        stall_limit=5,
    )


def newton_method() -> Method:
    """Newton's method with the exact Hessian, modified at saddles (``newton_direction``).

    The Hessian is the dense forward-over-reverse Hessian of the objective
    over the flattened params. First trial step 1; no model, so no restart.
    A small gradient ends a solve only where the Hessian has no eigenvalue
    below ``-sqrt(eps) |lam|max``. Each direction computes the Hessian once,
    twice where the factorisation fails (the eigendecomposition recomputes it);
    ``Direction.hessians`` counts both.

    Returns:
        The :class:`Method`.
    """

    def direction(model, objective, x, g):
        del model
        flat_x, unflatten = _tree.flat_view(x)
        flat_g = _tree.flat_view(g)[0]

        def f_flat(v):
            return objective(unflatten(v))

        def hessian():
            return curvature.dense_hessian(f_flat, flat_x)

        found = dirs.newton_direction(hessian(), flat_g, recompute=hessian, x=flat_x)
        # the eigendecomposition path computes the Hessian a second time (``recompute``)
        hessians = jnp.where(found.modified, 2, 1).astype(jnp.int32)
        return Direction(
            unflatten(found.direction), ~found.negative, hessians, jnp.zeros([], jnp.int32)
        )

    return _modelless("newton", direction, _keep_direction)


def newton_cg_method(max_cg_steps: int = 50) -> Method:
    """Newton-CG: the Newton step from truncated CG with Hessian-vector products.

    See :func:`~gradxform.second_order.directions.newton_cg_direction`; the
    products are :func:`gradxform.curvature.hvp` of the objective. First trial
    step 1; a non-descent direction is replaced by ``-g``.

    Args:
        max_cg_steps: the most CG steps per direction.

    Returns:
        The :class:`Method`.
    """

    def direction(model, objective, x, g):
        del model
        d, used = dirs.newton_cg_direction(
            lambda v: curvature.hvp(objective, x, v), g, max_cg_steps
        )
        return Direction(d, jnp.array(True), jnp.zeros([], jnp.int32), used)

    return _modelless("newton-cg", direction, _steepest_descent_fallback)
