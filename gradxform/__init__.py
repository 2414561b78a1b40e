"""gradxform: optimizers as composable, pure gradient transforms, in JAX.

A transform is a pair of pure functions, ``init(params) -> state`` and
``update(updates, state, params) -> (updates, state)``, and every transform
gradxform builds is an ``optax.GradientTransformationExtraArgs``. The
optimizers (:func:`sgd`, :func:`adam`, :func:`lbfgs`, ...) are chains of small
building blocks (:func:`scale_by_momentum`, :func:`ema_first_moment`,
:func:`bias_correct`, ...); every numeric hyperparameter lives in the state,
where :func:`get_hyperparams` and :func:`set_hyperparams` reach it by name.
:func:`minimize` runs Newton, Newton-CG, BFGS or L-BFGS to convergence, and
:mod:`gradxform.hessian` reads the curvature of any objective.

Every public name has one documented import path, ``gradxform.<name>``
(``import gradxform as gx``); the namespaces ``gx.schedules``, ``gx.hessian``,
``gx.tree`` (tree arithmetic), ``gx.hyperparams``, ``gx.checkpoint`` (save /
restore) and ``gx.torch_compat`` (torch.optim presets) are modules, and their
names are used through them (``gx.schedules.cosine_decay``).

Example:
    >>> import gradxform as gx, jax, jax.numpy as jnp
    >>> loss = lambda x: jnp.sum((x - 3.0) ** 2)
    >>> tx = gx.adam(0.1)
    >>> @jax.jit
    ... def step(x, state):
    ...     updates, state = tx.update(jax.grad(loss)(x), state, x)
    ...     return gx.apply_updates(x, updates), state
    >>> x = jnp.zeros(2)
    >>> state = tx.init(x)
    >>> for _ in range(200):
    ...     x, state = step(x, state)
    >>> [round(float(v), 2) for v in x]
    [3.0, 3.0]
"""

from gradxform import checkpoint, curvature, hessian, hyperparams, schedules, torch_compat, tree
from gradxform.base import (
    DivideState,
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    Schedule,
    apply_updates,
    chain,
    divide,
    identity,
    with_extra_args,
)
from gradxform.convolutions import canonical_convolutions
from gradxform.grouped import GroupedLeaves, GroupedState, group_state, grouped, ungroup_state
from gradxform.hyperparams import (
    Hyperparam,
    HyperparamChainState,
    Hyperparams,
    HyperparamState,
    ScalarOrSchedule,
    constant_hyperparams,
    get_hyperparams,
    set_hyperparams,
)
from gradxform.optimizers import (
    adagrad,
    adam,
    adamw,
    amsgrad,
    nadam,
    rmsprop,
    sgd,
    sgd_velocity,
)
from gradxform.optimizers_classic import adadelta, lamb, lars, nadam_momentum_decay, rprop
from gradxform.optimizers_factored import adafactor, adafactor_torch
from gradxform.optimizers_matrix import muon, shampoo, soap
from gradxform.optimizers_more import (
    adabelief,
    adamax,
    adamaxw,
    adopt,
    lion,
    nadamw,
    radam,
    sign_sgd,
    yogi,
)
from gradxform.optimizers_schedule_free import schedule_free_adamw, schedule_free_sgd
from gradxform.optimizers_sophia import sophia
from gradxform.second_order.aliases import bfgs, lbfgs, newton, newton_cg, trust_exact, trust_ncg
from gradxform.second_order.least_squares import least_squares
from gradxform.second_order.linesearch import (
    ScaleByLinesearchState,
    ZoomLinesearch,
    scale_by_backtracking_linesearch,
    scale_by_zoom_linesearch,
)
from gradxform.second_order.minimize import History, Solution, Status, minimize
from gradxform.second_order.transforms import (
    SecondOrderState,
    TrustRegionState,
    scale_by_bfgs,
    scale_by_lbfgs,
    scale_by_newton,
    scale_by_newton_cg,
    scale_by_trust_region,
)
from gradxform.transforms.accumulate import AccumulateState, accumulate, has_updated
from gradxform.transforms.adam_variants import (
    NormalizeByPreviousMomentState,
    RectifyState,
    YogiSecondMomentState,
    normalize_by_previous_moment,
    rectify,
    scale_by_adopt,
    scale_by_radam,
    scale_by_yogi,
    yogi_second_moment,
)
from gradxform.transforms.averaging import (
    EmaParamsState,
    LookaheadState,
    SwaState,
    averaged_params,
    ema_params,
    lookahead,
    swa,
)
from gradxform.transforms.classic_extra import (
    MomentumDecayFirstMomentState,
    ScaleByAdadeltaState,
    ScaleByRpropLaggedState,
    ScaleByRpropState,
    momentum_decay_first_moment,
    scale_by_adadelta,
    scale_by_rprop,
)
from gradxform.transforms.clipping import (
    ClipByGlobalNormState,
    ClipState,
    clip,
    clip_by_global_norm,
)
from gradxform.transforms.factored import (
    ClipByBlockRmsState,
    FactoredRmsState,
    ScaleByParamBlockRmsState,
    ScaleByRelativeStepState,
    clip_by_block_rms,
    factored_axes,
    scale_by_factored_rms,
    scale_by_param_block_rms,
    scale_by_relative_step,
)
from gradxform.transforms.finite import (
    ApplyIfFiniteState,
    NonFiniteUpdatesError,
    apply_if_finite,
    raise_if_gave_up,
)
from gradxform.transforms.kronecker import (
    GraftState,
    ShampooState,
    SoapState,
    graft,
    scale_by_shampoo,
    scale_by_soap,
)
from gradxform.transforms.moments import (
    AccumulateSquaresState,
    BiasCorrectState,
    EmaFirstMomentState,
    EmaSecondMomentState,
    RunningMaxState,
    SqrtWithEpsState,
    accumulate_squares,
    bias_correct,
    ema_first_moment,
    ema_second_moment,
    nesterov_first_moment,
    running_max,
    scale_by_adam,
    scale_by_nadam,
    scale_by_rms,
    scale_by_sum_of_squares,
    sqrt_with_eps,
)
from gradxform.transforms.moments_extra import (
    EmaBeliefMomentState,
    EmaInfinityMomentState,
    LionMomentState,
    ScaleByBeliefState,
    ScaleBySignState,
    ema_belief_moment,
    ema_infinity_moment,
    lion_moment,
    scale_by_adamax,
    scale_by_belief,
    scale_by_lion,
    scale_by_sign,
)
from gradxform.transforms.momentum import ScaleByMomentumState, scale_by_momentum
from gradxform.transforms.orthogonal import (
    OrthogonalizeState,
    newton_schulz,
    orthogonalize,
    scale_by_lookahead_ema,
)
from gradxform.transforms.partition import (
    MaskedState,
    PartitionState,
    freeze,
    masked,
    partition,
    set_to_zero,
)
from gradxform.transforms.plateau import ReduceOnPlateauState, reduce_on_plateau
from gradxform.transforms.scaling import (
    AddDecayedWeightsState,
    ScaleByLearningRateState,
    ScaleState,
    add_decayed_weights,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from gradxform.transforms.schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_eval_params,
)
from gradxform.transforms.sophia import (
    CurvatureFloorState,
    EmaHessianDiagonalState,
    curvature_floor,
    ema_hessian_diagonal,
    scale_by_sophia,
)
from gradxform.transforms.trust_ratio import ScaleByTrustRatioState, scale_by_trust_ratio

__version__ = "0.1.0"


def __dir__() -> list[str]:
    """The public API only: the implementation modules stay importable but unlisted."""
    return sorted([*__all__, "__version__"])


__all__ = [
    "adafactor",
    "adafactor_torch",
    "ClipByBlockRmsState",
    "FactoredRmsState",
    "ScaleByParamBlockRmsState",
    "ScaleByRelativeStepState",
    "clip_by_block_rms",
    "factored_axes",
    "scale_by_factored_rms",
    "scale_by_param_block_rms",
    "scale_by_relative_step",
    "adadelta",
    "lamb",
    "lars",
    "nadam_momentum_decay",
    "rprop",
    "MomentumDecayFirstMomentState",
    "ScaleByAdadeltaState",
    "ScaleByRpropLaggedState",
    "ScaleByRpropState",
    "ScaleByTrustRatioState",
    "momentum_decay_first_moment",
    "scale_by_adadelta",
    "scale_by_rprop",
    "scale_by_trust_ratio",
    "sophia",
    "CurvatureFloorState",
    "EmaHessianDiagonalState",
    "curvature_floor",
    "ema_hessian_diagonal",
    "scale_by_sophia",
    "ScheduleFreeState",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "adopt",
    "NormalizeByPreviousMomentState",
    "normalize_by_previous_moment",
    "scale_by_adopt",
    "yogi",
    "YogiSecondMomentState",
    "scale_by_yogi",
    "yogi_second_moment",
    "adamax",
    "adamaxw",
    "adabelief",
    "radam",
    "EmaBeliefMomentState",
    "RectifyState",
    "ema_belief_moment",
    "rectify",
    "scale_by_belief",
    "scale_by_radam",
    "lion",
    "nadamw",
    "sign_sgd",
    "EmaInfinityMomentState",
    "LionMomentState",
    "ScaleByBeliefState",
    "ScaleBySignState",
    "ema_infinity_moment",
    "lion_moment",
    "scale_by_adamax",
    "scale_by_lion",
    "scale_by_sign",
    "ReduceOnPlateauState",
    "reduce_on_plateau",
    "MaskedState",
    "PartitionState",
    "freeze",
    "masked",
    "partition",
    "orthogonalize",
    "OrthogonalizeState",
    "newton_schulz",
    "scale_by_lookahead_ema",
    "muon",
    "shampoo",
    "soap",
    "GraftState",
    "ShampooState",
    "SoapState",
    "graft",
    "scale_by_shampoo",
    "scale_by_soap",
    "set_to_zero",
    "EmaParamsState",
    "LookaheadState",
    "SwaState",
    "averaged_params",
    "ema_params",
    "lookahead",
    "swa",
    "AccumulateState",
    "accumulate",
    "has_updated",
    "ApplyIfFiniteState",
    "NonFiniteUpdatesError",
    "apply_if_finite",
    "raise_if_gave_up",
    "History",
    "ScaleByLinesearchState",
    "SecondOrderState",
    "TrustRegionState",
    "ZoomLinesearch",
    "Solution",
    "Status",
    "bfgs",
    "lbfgs",
    "least_squares",
    "minimize",
    "newton",
    "newton_cg",
    "trust_exact",
    "trust_ncg",
    "scale_by_backtracking_linesearch",
    "scale_by_bfgs",
    "scale_by_lbfgs",
    "scale_by_newton",
    "scale_by_newton_cg",
    "scale_by_trust_region",
    "scale_by_zoom_linesearch",
    "AccumulateSquaresState",
    "AddDecayedWeightsState",
    "BiasCorrectState",
    "ClipByGlobalNormState",
    "ClipState",
    "DivideState",
    "EmaFirstMomentState",
    "EmaSecondMomentState",
    "EmptyState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "GroupedLeaves",
    "GroupedState",
    "Hyperparam",
    "HyperparamChainState",
    "HyperparamState",
    "Hyperparams",
    "ScalarOrSchedule",
    "RunningMaxState",
    "Schedule",
    "ScaleByLearningRateState",
    "ScaleByMomentumState",
    "ScaleState",
    "SqrtWithEpsState",
    "accumulate_squares",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "amsgrad",
    "apply_updates",
    "bias_correct",
    "chain",
    "clip",
    "clip_by_global_norm",
    "constant_hyperparams",
    "divide",
    "ema_first_moment",
    "ema_second_moment",
    "get_hyperparams",
    "group_state",
    "grouped",
    "canonical_convolutions",
    "checkpoint",
    "curvature",
    "hessian",
    "hyperparams",
    "identity",
    "nadam",
    "nesterov_first_moment",
    "rmsprop",
    "running_max",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_momentum",
    "scale_by_nadam",
    "scale_by_rms",
    "scale_by_schedule",
    "scale_by_sum_of_squares",
    "schedules",
    "set_hyperparams",
    "sgd",
    "sgd_velocity",
    "sqrt_with_eps",
    "torch_compat",
    "tree",
    "ungroup_state",
    "with_extra_args",
]
