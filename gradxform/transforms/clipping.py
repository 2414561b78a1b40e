"""Clipping: bound each coordinate, or the global norm, of the updates."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import tree
from gradxform.base import EmptyState, GradientTransformationExtraArgs
from gradxform.hyperparams import Hyperparam, Hyperparams, HyperparamState, ScalarOrSchedule

__all__ = ["ClipByGlobalNormState", "ClipState", "clip", "clip_by_global_norm"]


class ClipState(NamedTuple):
    """State of :func:`clip`.

    Attributes:
        hyperparams: the block's store of ``max_delta`` (``EmptyState()`` for a handle).
    """

    hyperparams: HyperparamState | EmptyState


def clip(max_delta: ScalarOrSchedule | Hyperparam) -> GradientTransformationExtraArgs:
    r"""Clamps each coordinate: :math:`u_i \leftarrow \min(\max(u_i, -\delta), \delta)`.

    A complex coordinate is scaled to magnitude :math:`\delta` when it is larger.

    Args:
        max_delta: :math:`\delta \ge 0`: a number, a schedule or a handle.

    Returns:
        The block; its state is :class:`ClipState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.clip(1.0)
        >>> u, _ = tx.update(jnp.array([-3.0, 0.5]), tx.init(jnp.zeros(2)))
        >>> u.tolist()
        [-1.0, 0.5]
    """
    hp = Hyperparams(max_delta=max_delta).check("max_delta", lower=0)

    def apply(updates, values, params):
        def leaf(u):
            bound = tree.to_dtype(values["max_delta"], tree.real_dtype(u.dtype))
            if jnp.iscomplexobj(u):
                magnitude = jnp.abs(u)
                return jnp.where(magnitude > bound, u * (bound / magnitude), u)
            return jax.lax.clamp(-bound, u, bound)  # one op per element (jnp.clip: two)

        return jax.tree.map(leaf, updates)

    return hp.transform(apply, ClipState)


class ClipByGlobalNormState(NamedTuple):
    """State of :func:`clip_by_global_norm`.

    Attributes:
        hyperparams: the block's store of ``max_norm`` (``EmptyState()`` for a handle).
    """

    hyperparams: HyperparamState | EmptyState


def clip_by_global_norm(max_norm: ScalarOrSchedule | Hyperparam) -> GradientTransformationExtraArgs:
    r"""Rescales all updates together so that their global l2 norm is at most ``max_norm``.

    :math:`u \leftarrow u` if :math:`\|u\| < c`, else :math:`u\, c / \|u\|`,
    with :math:`\|u\|` the norm of all leaves together.

    Args:
        max_norm: :math:`c \ge 0`: a number, a schedule or a handle.

    Returns:
        The block; its state is :class:`ClipByGlobalNormState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.clip_by_global_norm(1.0)
        >>> u, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
        >>> [round(float(x), 6) for x in u]
        [0.6, 0.8]
    """
    hp = Hyperparams(max_norm=max_norm).check("max_norm", lower=0)

    def apply(updates, values, params):
        norm = tree.global_norm(updates)
        keep = norm < values["max_norm"]

        def leaf(u):
            dt = tree.real_dtype(u.dtype)
            clipped = (u / tree.to_dtype(norm, dt)) * tree.to_dtype(values["max_norm"], dt)
            return jax.lax.select(keep, u, clipped)  # a scalar predicate, not broadcast

        return jax.tree.map(leaf, updates)

    return hp.transform(apply, ClipByGlobalNormState)
