"""The per-batch curvature kinds of :func:`~gradxform.hessian.dataset_mean`, and two named losses.

For ``loss(model(params, x), y)`` on a batch, the Hessian, the generalised
Gauss-Newton matrix, the Fisher and the empirical Fisher come from
:mod:`gradxform.curvature`; :func:`softmax_cross_entropy` and
:func:`squared_error` are the two losses whose Fisher is their GGN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.curvature import (
    empirical_fisher_product,
    fisher_product,
    gauss_newton_product,
    linearized_hvp,
)

__all__ = ["softmax_cross_entropy", "squared_error"]

CURVATURES = ("hessian", "ggn", "fisher", "empirical_fisher")


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy, summed over middle axes and averaged over the leading axis.

    Args:
        logits: ``(N, ..., C)`` logits, classes on the last axis.
        labels: integer classes ``(N, ...)``, or probabilities shaped like ``logits``.

    Returns:
        ``-(1/N) sum log softmax(logits)[label]``: its Hessian in the logits is
        the categorical Fisher of :func:`gradxform.curvature.fisher_product`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> float(gx.hessian.softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3])))
        1.3862943649291992
    """
    log_p = jax.nn.log_softmax(logits, axis=-1)
    if jnp.ndim(labels) == jnp.ndim(logits):
        picked = jnp.sum(labels * log_p, axis=-1)
    else:
        picked = jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
    return -jnp.sum(picked) / logits.shape[0]


def squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """``0.5 * sum((outputs - targets) ** 2) / N`` over a leading axis of ``N`` examples.

    The negative log-likelihood of unit-variance Gaussians (up to a constant),
    so its GGN is the Gaussian Fisher ``J^T J / N``.

    Args:
        outputs: ``(N, ...)`` predictions.
        targets: shaped like ``outputs``.

    Returns:
        The scalar loss.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> float(gx.hessian.squared_error(jnp.ones((2, 3)), jnp.zeros((2, 3))))
        1.5
    """
    return 0.5 * jnp.sum((outputs - targets) ** 2) / outputs.shape[0]


_NAMED_LOSSES = {
    "softmax_cross_entropy": (softmax_cross_entropy, "categorical"),
    "squared_error": (squared_error, "gaussian"),
}


class _Kind(NamedTuple):
    """The per-batch loss and curvature: the compile-cache key of the per-batch steps."""

    loss: Any
    model: Any
    curvature: str
    likelihood: str | None

    def batch_loss(self, params: Any, batch: Any) -> jax.Array:
        """As :meth:`~gradxform.hessian.DatasetObjective.batch_loss`."""
        if self.model is None:
            return self.loss(params, batch)
        x, y = batch
        return self.loss(self.model(params, x), y)

    def batch_product(self, params: Any, batch: Any) -> Callable[[Any], Any]:
        """As :meth:`~gradxform.hessian.DatasetObjective.batch_product`."""
        if self.curvature == "hessian":
            return linearized_hvp(lambda p: self.batch_loss(p, batch), params)
        x, y = batch
        if self.curvature == "ggn":
            return gauss_newton_product(self.model, self.loss, params, x, y)
        if self.curvature == "fisher":
            return fisher_product(self.model, params, x, likelihood=str(self.likelihood))
        return empirical_fisher_product(self.model, self.loss, params, x, y)
