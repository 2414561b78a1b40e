r"""The layer-wise trust ratio of LARS and LAMB: each leaf's step scaled to its parameter's size.

LAMB's direction is Adam's, decayed, then rescaled leaf by leaf::

    chain(scale_by_adam(b1, b2, eps), add_decayed_weights(weight_decay),
          scale_by_trust_ratio())

and LARS's is the decayed gradient rescaled before heavy-ball momentum (see
:func:`gradxform.lamb`, :func:`gradxform.lars`).

The norms are whole-leaf norms, as optax's ``scale_by_trust_ratio``: a leaf
of shape ``(2, 3, 4)`` (a batch of two matrices) gets one ratio, not one per
matrix. A leaf sharded across devices therefore needs a reduction over its
shards (an all-reduce of two scalars per leaf) where elementwise transforms
need none.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import checks, tree
from gradxform.base import EmptyState, GradientTransformationExtraArgs
from gradxform.hyperparams import Hyperparam, Hyperparams, HyperparamState, ScalarOrSchedule

__all__ = ["ScaleByTrustRatioState", "scale_by_trust_ratio"]


class ScaleByTrustRatioState(NamedTuple):
    """State of :func:`scale_by_trust_ratio`.

    Attributes:
        hyperparams: the block's store of ``min_norm``, ``trust_coefficient``
            and ``eps`` (``EmptyState()`` when all three are handles).
    """

    hyperparams: HyperparamState | EmptyState


def _floored_norm(x: jax.Array, floor: jax.Array) -> jax.Array:
    """``max(||x||, floor)`` over the whole leaf, with a finite derivative at ``x = 0``.

    Where the norm is at most ``floor`` the norm is taken of ones instead (its
    value is discarded), so the derivative of the root never sees a zero.
    """
    norm = jnp.linalg.norm(x)
    small = norm <= floor
    safe = jnp.linalg.norm(jnp.where(small, jnp.ones_like(x), x))
    return jnp.where(small, floor, safe)


def scale_by_trust_ratio(
    min_norm: ScalarOrSchedule | Hyperparam = 0.0,
    trust_coefficient: ScalarOrSchedule | Hyperparam = 1.0,
    eps: ScalarOrSchedule | Hyperparam = 0.0,
) -> GradientTransformationExtraArgs:
    r"""Scales each leaf's update by its trust ratio :math:`c\, \|x\| / (\|u\| + \epsilon)`.

    For each leaf, with :math:`\|\cdot\|` the norm of the whole leaf floored
    at ``min_norm``:

    .. math::

        u \leftarrow u \cdot \begin{cases}
        c\, \|x\| / (\|u\| + \epsilon) & \text{if } \|x\| > 0 \text{ and } \|u\| > 0 \\
        1 & \text{otherwise}
        \end{cases}

    (a leaf at zero, or a zero update, is left as it is). The ratio is the
    same expression as optax's ``scale_by_trust_ratio``. See
    :func:`gradxform.lamb` and :func:`gradxform.lars`.

    Args:
        min_norm: floor :math:`\ge 0` of both norms: a number, a schedule or a handle.
        trust_coefficient: :math:`c \ge 0` (LARS's :math:`\eta`, 1 in LAMB).
        eps: :math:`\epsilon \ge 0`, added to the update's norm.

    Returns:
        The block; its state is :class:`ScaleByTrustRatioState`. Its update
        needs ``params``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_trust_ratio()
        >>> x = jnp.array([3.0, 4.0])  # ||x|| = 5
        >>> u, _ = tx.update(jnp.array([0.0, 0.5]), tx.init(x), x)
        >>> u.tolist()  # scaled to the norm of x
        [0.0, 5.0]
    """
    hp = Hyperparams(min_norm=min_norm, trust_coefficient=trust_coefficient, eps=eps)
    for name in ("min_norm", "trust_coefficient", "eps"):
        hp.check(name, lower=0)

    def apply(updates, values, params):
        if params is None:
            checks.fail("params", "given (scale_by_trust_ratio's update needs params)", params)
        tree.check_structure(params, updates, "params", "updates")

        def leaf(u, x):
            dt = tree.real_dtype(x.dtype)
            floor = tree.to_dtype(values["min_norm"], dt)
            x_norm, u_norm = _floored_norm(x, floor), _floored_norm(u, floor)
            coefficient = tree.to_dtype(values["trust_coefficient"], dt)
            ratio = coefficient * x_norm / (u_norm + tree.to_dtype(values["eps"], dt))
            degenerate = jnp.logical_or(x_norm == 0, u_norm == 0)
            ratio = jnp.where(degenerate, jnp.ones([], dt), ratio)
            return tree.to_dtype(u * ratio, u.dtype)

        return jax.tree.map(leaf, updates, params)

    return hp.transform(apply, ScaleByTrustRatioState)
