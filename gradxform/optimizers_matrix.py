r"""Matrix-aware optimizers: chains that treat 2-D (and batched) leaves as matrices.

Notation as in :mod:`gradxform.optimizers`.
"""

from __future__ import annotations

from typing import Any

from jax.typing import DTypeLike

from gradxform import checks
from gradxform.base import GradientTransformationExtraArgs, chain, identity
from gradxform.hyperparams import Hyperparams, ScalarOrSchedule
from gradxform.optimizers import _adam_chain
from gradxform.transforms.kronecker import graft, scale_by_shampoo, scale_by_soap
from gradxform.transforms.moments import (
    bias_correct,
    ema_first_moment,
    nesterov_first_moment,
    scale_by_rms,
    scale_by_sum_of_squares,
)
from gradxform.transforms.momentum import scale_by_momentum
from gradxform.transforms.orthogonal import orthogonalize, scale_by_lookahead_ema
from gradxform.transforms.partition import partition
from gradxform.transforms.scaling import decay_blocks, decay_spec, scale_by_learning_rate

__all__ = ["muon", "shampoo", "soap"]


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
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        nesterov: use the look-ahead :math:`\tilde m`.
        bias_correction: bias-correct the momentum as optax.contrib.muon does.
        ns_coeffs, ns_steps, eps: as in :func:`gradxform.orthogonalize`.
        mu_dtype: dtype of :math:`m` (and of Adam's first moment).
        labels: ``None`` (rank >= 2 -> ``"muon"``, else ``"adam"``), or any
            ``labels`` of :func:`gradxform.partition` naming ``"muon"`` and
            ``"adam"`` (a function of ``(path, leaf)``, glob patterns, a pytree);
            a group may be empty (unlike :func:`gradxform.partition`).
        adam_learning_rate: the adam group's rate (default: ``learning_rate``).
        adam_b1, adam_b2, adam_eps, adam_eps_root, adam_weight_decay: AdamW's (a zero
            weight decay leaves its block out, as for ``weight_decay``).
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
    hp = Hyperparams(learning_rate=learning_rate, momentum=momentum, **decay_spec(weight_decay))
    hp.check("momentum", lower=0, upper=1, upper_open=True)
    muon_tx = hp.chain(
        _momentum(hp, nesterov, bias_correction, mu_dtype),
        orthogonalize(ns_coeffs, ns_steps, eps, **orthogonalize_options),
        *decay_blocks(hp),
        scale_by_learning_rate(hp["learning_rate"]),
    )
    adam_hp = Hyperparams(
        learning_rate=learning_rate if adam_learning_rate is None else adam_learning_rate,
        b1=adam_b1,
        b2=adam_b2,
        eps=adam_eps,
        eps_root=adam_eps_root,
        **decay_spec(adam_weight_decay),
    )
    decay = decay_blocks(adam_hp)
    adam_tx = _adam_chain(adam_hp, *decay, nesterov=adam_nesterov, mu_dtype=mu_dtype)
    split = _matrix_or_vector if labels is None else labels
    # a tree of matrices only (torch's Muon takes nothing else) leaves "adam" empty
    return partition({"muon": muon_tx, "adam": adam_tx}, split, allow_empty_groups=True)


_GRAFTS = (None, "sgd", "diagonal")


def _grafted(hp: Hyperparams, direction: Any, kind: str | None) -> Any:
    """Shampoo's direction, grafted onto SGD's or the diagonal rule's per-leaf norm."""
    if kind is None:
        return direction
    if kind == "sgd":
        return graft(identity(), direction)
    if "beta2" in hp.specs:
        diag = scale_by_rms(hp["beta2"], hp["graft_eps"], eps_in_sqrt=False)
    else:
        diag = scale_by_sum_of_squares(0.0, hp["graft_eps"])
    return graft(diag, direction)


def shampoo(
    learning_rate: ScalarOrSchedule,
    beta2: ScalarOrSchedule | None = None,
    eps: ScalarOrSchedule = 1e-6,
    precondition_frequency: int = 1,
    weight_decay: ScalarOrSchedule = 0.0,
    *,
    momentum: ScalarOrSchedule = 0.0,
    graft_type: str | None = None,
    graft_eps: ScalarOrSchedule = 1e-10,
    max_precond_dim: int = 10000,
    mask: Any = None,
    **options: Any,
) -> GradientTransformationExtraArgs:
    r"""Shampoo (Gupta, Koren & Singer, 2018): Kronecker-factored AdaGrad on matrices.

    .. math::

        L \leftarrow L + G G^\top, \quad R \leftarrow R + G^\top G, \quad
        x \leftarrow x - \eta \bigl((L + \epsilon I)^{-1/4} G (R + \epsilon I)^{-1/4}
        + \lambda x\bigr)

    with the roots recomputed every ``precondition_frequency`` updates (see
    :func:`gradxform.scale_by_shampoo` for the EMA form with ``beta2``, the
    sides not factored and the diagonal fallback of vectors). ``momentum``
    :math:`\rho > 0` adds heavy-ball momentum on the preconditioned direction
    (:func:`gradxform.scale_by_momentum`). ``graft_type="sgd"`` rescales each
    leaf's direction to the norm of :math:`G`, ``"diagonal"`` to the norm of
    the diagonal rule's step (AdaGrad, or RMSProp with ``beta2``, with
    ``graft_eps``), as distributed Shampoo does (:func:`gradxform.graft`).
    Defaults follow pytorch-optimizer's ``Shampoo`` (sums, :math:`\epsilon =
    10^{-6}`, roots every step, no grafting), which equals gradxform's when
    its momentum is 0 (its momentum buffer holds the last preconditioned step,
    and with ``preconditioning_compute_steps`` > 1 its roots are zero until the
    first refresh; gradxform computes them at the first update).

    Composition: ``hp.chain(scale_by_shampoo(beta2, eps, precondition_frequency),
    [scale_by_momentum(momentum)], add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``, the first wrapped in
    ``graft(...)`` when grafting.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        beta2: ``None`` (sums) or the statistics' EMA decay in [0, 1).
        eps: :math:`\epsilon \ge 0` added to the statistics' eigenvalues.
        precondition_frequency: the roots' refresh period, an integer >= 1.
        weight_decay: :math:`\lambda \ge 0` (decoupled, times the learning rate).
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        momentum: :math:`\rho` in [0, 1); 0 (the default) keeps no momentum.
        graft_type: ``None``, ``"sgd"`` or ``"diagonal"``.
        graft_eps: the diagonal graft's :math:`\epsilon`.
        max_precond_dim: sides larger than this are not factored.
        mask: limits the weight decay to some leaves (:func:`gradxform.add_decayed_weights`).
        **options: ``batching``, ``stats_dtype``, ``eigh_dtype`` of
            :func:`gradxform.scale_by_shampoo`.

    Returns:
        Shampoo; its state holds one store and a :class:`~gradxform.ShampooState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.shampoo(0.1, eps=0.0)
        >>> x = jnp.zeros((2, 2))
        >>> u, _ = tx.update(jnp.array([[4.0, 0.0], [0.0, 1.0]]), tx.init(x), x)
        >>> [round(float(v), 4) for v in jnp.diag(u)]  # -0.1 * L^(-1/4) G R^(-1/4)
        [-0.1, -0.1]
    """
    checks.choice("graft_type", graft_type, _GRAFTS)
    specs = dict(learning_rate=learning_rate, eps=eps, **decay_spec(weight_decay))
    specs.update(precondition_frequency=precondition_frequency, momentum=momentum)
    if beta2 is not None:
        specs["beta2"] = beta2
    if graft_type == "diagonal":
        specs["graft_eps"] = graft_eps
    hp = Hyperparams(**specs)
    hp.check("momentum", lower=0, upper=1, upper_open=True)
    direction = scale_by_shampoo(
        hp["beta2"] if beta2 is not None else None,
        hp["eps"],
        hp["precondition_frequency"],
        max_precond_dim=max_precond_dim,
        **options,
    )
    steps = [_grafted(hp, direction, graft_type)]
    if not (checks.is_real_number(momentum) and momentum == 0):
        steps.append(scale_by_momentum(hp["momentum"]))
    steps += [*decay_blocks(hp, mask), scale_by_learning_rate(hp["learning_rate"])]
    return hp.chain(*steps)


def soap(
    learning_rate: ScalarOrSchedule = 3e-3,
    b1: ScalarOrSchedule = 0.95,
    b2: ScalarOrSchedule = 0.95,
    shampoo_beta: ScalarOrSchedule | None = None,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.01,
    precondition_frequency: int = 10,
    *,
    max_precond_dim: int = 10000,
    mask: Any = None,
    **options: Any,
) -> GradientTransformationExtraArgs:
    r"""SOAP (Vyas et al., 2024, "SOAP: Improving and Stabilizing Shampoo using Adam").

    Adam run in the eigenbasis :math:`Q_L, Q_R` of Shampoo's statistics
    (refreshed every ``precondition_frequency`` updates by one power-iteration
    and QR step), decoupled weight decay:

    .. math::

        u = \frac{\sqrt{1 - \beta_2^s}}{1 - \beta_1^s}
            Q_L \frac{Q_L^\top m Q_R}{\sqrt{v} + \epsilon} Q_R^\top, \quad
        x \leftarrow x - \eta (u + \lambda x)

    (:math:`m`, :math:`v` and :math:`s = t - 1` as in
    :func:`gradxform.scale_by_soap`; the first update returns zeros and only
    starts the statistics, as the paper's code does). Defaults are the paper's
    (and pytorch-optimizer's). The paper's code (and pytorch-optimizer) decay
    after the step, :math:`x \leftarrow (x - \eta u)(1 - \eta\lambda)`;
    gradxform adds :math:`\lambda x` to the update as its other decoupled
    optimizers do (the two differ by :math:`\eta^2 \lambda u`). Vectors and
    leaves with no side of at most ``max_precond_dim`` take Adam's step.

    Composition: ``hp.chain(scale_by_soap(b1, b2, shampoo_beta, eps,
    precondition_frequency), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        b1: :math:`\beta_1` in [0, 1).
        b2: :math:`\beta_2` in [0, 1).
        shampoo_beta: the statistics' decay in [0, 1), or ``None`` for ``b2``.
        eps: :math:`\epsilon \ge 0`.
        weight_decay: :math:`\lambda \ge 0`.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        precondition_frequency: the eigenbasis refresh period, an integer >= 1.
        max_precond_dim: sides larger than this are not factored.
        mask: limits the weight decay to some leaves.
        **options: ``batching``, ``refresh``, ``factored``, ``mu_dtype``,
            ``stats_dtype``, ``eigh_dtype`` of :func:`gradxform.scale_by_soap`.

    Returns:
        SOAP; its state holds one store and a :class:`~gradxform.SoapState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.soap(0.1, b1=0.0, b2=0.0, weight_decay=0.0)
        >>> x = jnp.zeros((2, 2))
        >>> g = jnp.array([[3.0, 0.0], [0.0, -2.0]])
        >>> u, s = tx.update(g, tx.init(x), x)  # zeros: the statistics start
        >>> u, s = tx.update(g, s, x)
        >>> [round(float(v), 4) for v in jnp.diag(u)]
        [-0.1, 0.1]
    """
    specs = dict(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, **decay_spec(weight_decay))
    specs["precondition_frequency"] = precondition_frequency
    if shampoo_beta is not None:
        specs["shampoo_beta"] = shampoo_beta
    hp = Hyperparams(**specs)
    direction = scale_by_soap(
        hp["b1"],
        hp["b2"],
        hp["shampoo_beta"] if shampoo_beta is not None else None,
        hp["eps"],
        hp["precondition_frequency"],
        max_precond_dim=max_precond_dim,
        **options,
    )
    decay = decay_blocks(hp, mask)
    return hp.chain(direction, *decay, scale_by_learning_rate(hp["learning_rate"]))
