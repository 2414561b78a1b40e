r"""Matrix-aware optimizers: chains that treat 2-D (and batched) leaves as matrices.

Notation as in :mod:`gradxform.optimizers`.
"""

from __future__ import annotations

from typing import Any

from jax.typing import DTypeLike

from gradxform import checks
from gradxform.base import GradientTransformationExtraArgs, chain
from gradxform.hyperparams import Hyperparams, ScalarOrSchedule
from gradxform.optimizers import _adam_chain
from gradxform.transforms.moments import (
    bias_correct,
    ema_first_moment,
    nesterov_first_moment,
)
from gradxform.transforms.orthogonal import orthogonalize, scale_by_lookahead_ema
from gradxform.transforms.partition import partition
from gradxform.transforms.scaling import add_decayed_weights, scale_by_learning_rate

__all__ = ["muon"]


def _matrix_or_vector(path: Any, leaf: Any) -> str:
    """The default split of :func:`muon`: rank >= 2 -> ``"muon"``, else ``"adam"``."""
    del path
    return "muon" if leaf.ndim >= 2 else "adam"


def _momentum(hp: Hyperparams, nesterov: bool, bias_correction: bool, mu_dtype: Any):
    if not bias_correction:
        return scale_by_lookahead_ema(hp["momentum"], nesterov=nesterov, dtype=mu_dtype)
    if nesterov:
        return nesterov_first_moment(hp["momentum"], dtype=mu_dtype)
    return chain(ema_first_moment(hp["momentum"], dtype=mu_dtype), bias_correct(hp["momentum"]))


def muon(
    learning_rate: ScalarOrSchedule,
    momentum: ScalarOrSchedule = 0.95,
    weight_decay: ScalarOrSchedule = 0.0,
    *,
    nesterov: bool = True,
    bias_correction: bool = False,
    ns_coeffs: tuple[ScalarOrSchedule, ...] = (3.4445, -4.7750, 2.0315),
    ns_steps: int = 5,
    eps: ScalarOrSchedule = 1e-7,
    mu_dtype: DTypeLike | None = None,
    labels: Any = None,
    adam_learning_rate: ScalarOrSchedule | None = None,
    adam_b1: ScalarOrSchedule = 0.9,
    adam_b2: ScalarOrSchedule = 0.999,
    adam_eps: ScalarOrSchedule = 1e-8,
    adam_eps_root: ScalarOrSchedule = 0.0,
    adam_weight_decay: ScalarOrSchedule = 0.0,
    adam_nesterov: bool = False,
    **orthogonalize_options: Any,
) -> GradientTransformationExtraArgs:
    r"""Muon: momentum orthogonalised by Newton-Schulz on matrices, AdamW on the rest.

    On the ``"muon"`` group (by default every leaf of rank >= 2):

    .. math::

        m \leftarrow \beta m + (1 - \beta) g, \quad
        \tilde m = \beta m + (1 - \beta) g \ \text{(Nesterov) or } m, \quad
        x \leftarrow x - \eta\, \bigl(s\, \mathrm{NS}_k(\tilde m) + \lambda x\bigr)

    with :math:`\mathrm{NS}_k` and the shape factor :math:`s` of
    :func:`gradxform.orthogonalize`. ``bias_correction=True`` divides both
    terms of :math:`\tilde m` by their bias corrections (optax.contrib.muon's
    form, :func:`gradxform.nesterov_first_moment`); the default follows
    torch.optim.Muon and Keller Jordan's reference (none: the normalisation
    in :math:`\mathrm{NS}_k` makes the scale of :math:`\tilde m` irrelevant,
    only its direction changes). The ``"adam"`` group is AdamW
    (:func:`gradxform.adamw`, with ``adam_nesterov=True`` NAdamW as optax's
    muon uses with ``nesterov=True``).

    Composition: ``partition({"muon": hp.chain(scale_by_lookahead_ema(momentum),
    orthogonalize(ns_coeffs, ns_steps, eps, ...), add_decayed_weights(weight_decay),
    scale_by_learning_rate(learning_rate)), "adam": adamw(...)}, labels)``.

    Args:
        learning_rate: :math:`\eta \ge 0` of the muon group.
        momentum: :math:`\beta` in [0, 1).
        weight_decay: :math:`\lambda \ge 0` of the muon group (optax's default
            0; torch's is 0.1).
        nesterov: use the look-ahead :math:`\tilde m`.
        bias_correction: bias-correct the momentum as optax.contrib.muon does.
        ns_coeffs, ns_steps, eps: as in :func:`gradxform.orthogonalize`.
        mu_dtype: dtype of :math:`m` (and of Adam's first moment).
        labels: ``None`` (rank >= 2 -> ``"muon"``, else ``"adam"``), or any
            ``labels`` of :func:`gradxform.partition` naming ``"muon"`` and
            ``"adam"`` (a function of ``(path, leaf)``, glob patterns, a pytree);
            a group may be empty (unlike :func:`gradxform.partition`).
        adam_learning_rate: the adam group's rate (default: ``learning_rate``).
        adam_b1, adam_b2, adam_eps, adam_eps_root, adam_weight_decay: AdamW's.
        adam_nesterov: NAdamW's look-ahead moment on the adam group.
        **orthogonalize_options: ``eps_mode``, ``scaling``, ``layout``, ``rms``,
            ``batching``, ``ns_dtype`` of :func:`gradxform.orthogonalize`.

    Returns:
        The partitioned optimizer; its state is a :class:`~gradxform.PartitionState`
        with groups ``"muon"`` and ``"adam"``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
        >>> tx = gx.muon(0.1)
        >>> grads = {"w": jnp.array([[2.0, 0.0], [0.0, 2.0]]), "b": jnp.array([1.0, -1.0])}
        >>> u, _ = tx.update(grads, tx.init(params), params)
        >>> [round(float(v), 4) for v in jnp.diag(u["w"])]  # -0.1 * 1.108 (NS band)
        [-0.1108, -0.1108]
        >>> [round(float(v), 4) for v in u["b"]]  # Adam's first step: -lr * sign(g)
        [-0.1, 0.1]
    """
    nesterov = checks.boolean("nesterov", nesterov)
    bias_correction = checks.boolean("bias_correction", bias_correction)
    adam_nesterov = checks.boolean("adam_nesterov", adam_nesterov)
    hp = Hyperparams(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay)
    hp.check("momentum", lower=0, upper=1, upper_open=True)
    muon_tx = hp.chain(
        _momentum(hp, nesterov, bias_correction, mu_dtype),
        orthogonalize(ns_coeffs, ns_steps, eps, **orthogonalize_options),
        add_decayed_weights(hp["weight_decay"]),
        scale_by_learning_rate(hp["learning_rate"]),
    )
    adam_hp = Hyperparams(
        learning_rate=learning_rate if adam_learning_rate is None else adam_learning_rate,
        b1=adam_b1,
        b2=adam_b2,
        eps=adam_eps,
        eps_root=adam_eps_root,
        weight_decay=adam_weight_decay,
    )
    decay = add_decayed_weights(adam_hp["weight_decay"])
    adam_tx = _adam_chain(adam_hp, decay, nesterov=adam_nesterov, mu_dtype=mu_dtype)
    split = _matrix_or_vector if labels is None else labels
    # a tree of matrices only (torch's Muon takes nothing else) leaves "adam" empty
    return partition({"muon": muon_tx, "adam": adam_tx}, split, allow_empty_groups=True)
