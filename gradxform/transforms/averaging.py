r"""Parameter averaging: an EMA or a uniform (SWA) average of the parameters, and Lookahead.

:func:`ema_params` and :func:`swa` pass the updates through unchanged and keep
an average of the parameters *after* each update (``params + updates``) in
their state, so they go last in a chain::

    tx = gx.chain(gx.adamw(1e-3), gx.ema_params(0.999))
    ...
    eval_params = gx.averaged_params(state)

:func:`lookahead` wraps an optimizer and changes the training trajectory (it
pulls the parameters back to its slow weights every ``sync_period`` steps);
its slow weights are what :func:`averaged_params` reads. Reading an average
never changes the state, so evaluating with it does not disturb training.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import DTypeLike

from gradxform import checks, tree
from gradxform.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    with_extra_args,
)
from gradxform.hyperparams import Hyperparam, Hyperparams, HyperparamState, ScalarOrSchedule

__all__ = [
    "EmaParamsState",
    "LookaheadState",
    "SwaState",
    "averaged_params",
    "ema_params",
    "lookahead",
    "swa",
]


def _copy(params: Any, dtype: np.dtype | None) -> Any:
    """A copy of ``params`` in ``dtype`` (complex leaves stay complex), for the average."""

    def leaf(p):
        p = jnp.asarray(p)
        dt = p.dtype if dtype is None else dtype
        if jnp.issubdtype(p.dtype, jnp.complexfloating):
            dt = jnp.promote_types(dt, jnp.complex64)
        return jnp.array(p, dtype=dt, copy=True)

    return jax.tree.map(leaf, params)


def _integer(name: str, value: Any, minimum: int) -> Any:
    """Checks an integer argument when it is a number (a handle is checked by its store)."""
    if isinstance(value, Hyperparam):
        return value
    return checks.integer(name, value, minimum=minimum)


def _params_after(why: str, params: Any, updates: Any) -> Any:
    """``params + updates``, each leaf in its parameter's dtype (as ``apply_updates`` makes it)."""
    if params is None:
        checks.fail("params", f"given ({why})", params)
    tree.check_structure(params, updates, "params", "updates")
    return jax.tree.map(_rounded_sum, params, updates)


def _rounded_sum(p: jax.Array, u: jax.Array) -> jax.Array:
    """``p + u`` rounded to ``p``'s dtype, as ``apply_updates`` stores it.

    XLA may keep a bfloat16 or float16 sum in float32 when it feeds more
    arithmetic (``xla_allow_excess_precision``); a float32 average of
    bfloat16 params would then average values the params never held.
    ``reduce_precision`` rounds it as stored.
    """
    x = tree.to_dtype(jnp.asarray(p + u), p.dtype)
    if x.dtype in (jnp.bfloat16, jnp.float16):
        info = jnp.finfo(x.dtype)
        x = jax.lax.reduce_precision(x, exponent_bits=info.nexp, mantissa_bits=info.nmant)
    return x


class EmaParamsState(NamedTuple):
    """State of :func:`ema_params`.

    Attributes:
        ema: the moving average :math:`m` of the parameters, shaped like
            them, in the average's dtype: the initial parameters before the
            first update (which gives them no weight), then with ``debias``
            the average started at zero, which :func:`averaged_params`
            divides by ``correction``.
        correction: :math:`1 - \\beta^t` after update :math:`t` with
            ``debias`` (1 before the first update, and always 1 without).
        hyperparams: the store of ``ema_decay`` and the step count
            (``EmptyState()`` for a handle).
    """

    ema: Any
    correction: jax.Array
    hyperparams: HyperparamState | EmptyState


def ema_params(
    decay: ScalarOrSchedule | Hyperparam = 0.999,
    *,
    debias: bool = True,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""An exponential moving average (Polyak averaging) of the parameters after each update.

    With :math:`x_t` the parameters after update :math:`t = 1, 2, \dots`
    (``params + updates``), the state keeps

    .. math:: m_t = (1 - \beta)\, x_t + \beta\, m_{t-1}

    and with ``debias`` (the default) :func:`averaged_params` reads
    :math:`m_t / (1 - \beta^t)` from :math:`m_0 = 0`: the average optax's
    ``ema(decay)`` makes of the parameter sequence, bit for bit, which weighs
    the parameters seen as :math:`(1 - \beta)\beta^{t-s} / (1 - \beta^t)`,
    so the early ones are not over-weighted. Without ``debias`` it reads
    torch's ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))``
    updated after every step: :math:`m_1 = x_1` (a copy), then
    :math:`m_t = m_{t-1} + (1 - \beta)(x_t - m_{t-1})` (torch's ``lerp``;
    bit for bit on CPU, where both fuse it into one multiply-add), which
    keeps a weight :math:`\beta^{t-1}` on :math:`x_1`.
    The updates pass through unchanged: put it last in the chain (after the
    learning rate), so that ``params + updates`` are the next parameters.
    Before the first update :func:`averaged_params` reads the initial
    parameters. The decay is the hyperparameter ``ema_decay``
    (``gx.set_hyperparams(state, ema_decay=0.9999)``); a scheduled decay is
    debiased with its current value, :math:`1 - \beta_t^t`, as optax does.

    Args:
        decay: :math:`\beta` in [0, 1): a number, a schedule or a handle.
        debias: divide by :math:`1 - \beta^t` (start from zero, as optax),
            or start from the first parameters (as torch).
        dtype: dtype of the average (default: each parameter's dtype). A
            bfloat16 average with :math:`\beta = 0.999` does not work
            (bfloat16 rounds 0.999 to 1): use ``dtype=jnp.float32`` there.

    Returns:
        The block; its state is :class:`EmaParamsState`. Its update needs ``params``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.chain(gx.sgd(1.0), gx.ema_params(0.5))
        >>> x = jnp.zeros(1)
        >>> state = tx.init(x)
        >>> for g in (-2.0, -2.0):  # the params go 0 -> 2 -> 4
        ...     u, state = tx.update(jnp.array([g]), state, x)
        ...     x = gx.apply_updates(x, u)
        >>> float(gx.averaged_params(state)[0])  # (0.5 * 2 + 4) / (1 + 0.5)
        3.3333332538604736
    """
    if not isinstance(decay, Hyperparam) and checks.is_real_number(decay):
        checks.real("decay", decay, lower=0, upper=1, upper_open=True)
    debias = checks.boolean("debias", debias)
    dtype = checks.optional_dtype("dtype", dtype, complex_ok=True)
    hp = Hyperparams(ema_decay=decay).check("ema_decay", lower=0, upper=1, upper_open=True)
    hp.use_complement("ema_decay").use_count()

    def init_fn(params):
        tree.check_params(params)
        hyper = hp.init(params)
        one = jnp.ones([], np.dtype("float64") if _wide(params) else np.dtype("float32"))
        return EmaParamsState(_copy(params, dtype), one, hyper)

    def update_fn(updates, state, params=None, **extra_args):
        new_params = _params_after("ema_params averages params + updates", params, updates)
        values, hyper = hp.step(state.hyperparams, extra_args)
        beta, gain = values["ema_decay"], values.complement("ema_decay")
        first = values.count == 1
        if debias:  # optax.ema's (1 - b) x + b m, from m_0 = 0
            beta_1 = jnp.where(first, jnp.zeros_like(beta), beta)  # m_1 = (1 - b) x_1
            ema = tree.ema(beta_1, gain, state.ema, new_params)
            correction = jnp.asarray(1 - beta**values.count, state.correction.dtype)
        else:  # torch's lerp m + (1 - b)(x - m), after a copy m_1 = x_1
            ema = jax.tree.map(lambda m, x: _lerp(first, gain, m, x), state.ema, new_params)
            correction = state.correction
        return updates, EmaParamsState(ema, correction, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _lerp(first: jax.Array, weight: jax.Array, m: jax.Array, x: jax.Array) -> jax.Array:
    """``x`` at the first average, else ``m + weight * (x - m)`` (torch's lerp, weight < 0.5)."""
    x = tree.to_dtype(x, m.dtype)
    return jnp.where(first, x, m + tree.to_dtype(weight, tree.real_dtype(m.dtype)) * (x - m))


def _divide(num: jax.Array, count: jax.Array) -> jax.Array:
    """``num / count`` for an integer scalar ``count``, rounded as a division.

    XLA rewrites a division by a broadcast scalar into a multiplication by its
    reciprocal, which rounds differently in about a third of the elements;
    dividing by a value made per element (``count + isnan(num)``: ``count``
    wherever the result is not NaN anyway; fused into the same loop, no
    buffer) keeps it a division, as torch computes it.
    """
    real = tree.real_dtype(num.dtype)
    return num / (jnp.isnan(num).astype(real) + count.astype(real))


def _wide(params: Any) -> bool:
    """Whether a leaf is float64 or complex128 (the store keeps float64 values then)."""
    wide = (np.dtype("float64"), np.dtype("complex128"))
    return any(jnp.asarray(p).dtype in wide for p in jax.tree.leaves(params))


class SwaState(NamedTuple):
    """State of :func:`swa`.

    Attributes:
        average: the uniform average of the parameters averaged so far, in
            the average's dtype (a copy of the initial parameters before the
            first one, as torch's ``AveragedModel`` copies the model).
        n_averaged: how many parameter sets are in the average (int32).
        hyperparams: the store of ``swa_start``, ``swa_every`` (int32) and
            the step count.
    """

    average: Any
    n_averaged: jax.Array
    hyperparams: HyperparamState | EmptyState


def swa(
    start: int | Hyperparam = 0,
    every: int | Hyperparam = 1,
    *,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Stochastic weight averaging: the uniform average of the parameters from a start step.

    With :math:`x_t` the parameters after update :math:`t = 1, 2, \dots`
    (``params + updates``), :math:`x_t` joins the average when
    :math:`t \ge` ``start`` and :math:`t -` ``start`` is a multiple of
    ``every``:

    .. math:: a \leftarrow a + (x_t - a) / (n + 1), \quad n \leftarrow n + 1,

    the first one copied (:math:`a = x_t` at :math:`n = 0`). These are the
    semantics of torch's ``swa_utils.AveragedModel`` (its ``n_averaged``
    and its default average, bit for bit) with ``update_parameters(model)``
    called after those optimizer steps. The updates pass through unchanged:
    put it last in the chain. :func:`averaged_params` reads :math:`a` (the
    initial parameters while :math:`n = 0`). ``start`` and ``every`` are the
    integer hyperparameters ``swa_start`` and ``swa_every``.

    Args:
        start: the first update whose parameters are averaged, an integer >= 0
            (0 and 1 both start at the first update).
        every: average every ``every``-th update from ``start``, an integer >= 1.
        dtype: dtype of the average (default: each parameter's dtype;
            ``jnp.float32`` for a float32 average of bfloat16 parameters).

    Returns:
        The block; its state is :class:`SwaState`. Its update needs ``params``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.chain(gx.sgd(1.0), gx.swa(start=2))
        >>> x = jnp.zeros(1)
        >>> state = tx.init(x)
        >>> for _ in range(4):  # the params go 0 -> 1 -> 2 -> 3 -> 4
        ...     u, state = tx.update(jnp.array([-1.0]), state, x)
        ...     x = gx.apply_updates(x, u)
        >>> float(gx.averaged_params(state)[0]), int(state[1].n_averaged)  # (2 + 3 + 4) / 3
        (3.0, 3)
    """
    start, every = _integer("start", start, 0), _integer("every", every, 1)
    dtype = checks.optional_dtype("dtype", dtype, complex_ok=True)
    hp = Hyperparams(swa_start=start, swa_every=every)
    hp.check("swa_start", lower=0, integer=True).check("swa_every", lower=1, integer=True)
    hp.use_count()

    def init_fn(params):
        tree.check_params(params)
        return SwaState(_copy(params, dtype), jnp.zeros([], jnp.int32), hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        new_params = _params_after("swa averages params + updates", params, updates)
        values, hyper = hp.step(state.hyperparams, extra_args)
        t, first = values.count, values["swa_start"]
        take = (t >= first) & ((t - first) % values["swa_every"] == 0)
        n = state.n_averaged

        def leaf(a, x):
            wide = jnp.promote_types(a.dtype, jnp.float32)  # n + 1 exact past 256
            x, a_wide = x.astype(wide), a.astype(wide)
            mean = a_wide + _divide(x - a_wide, n + 1)
            new = jnp.where(n == 0, x, mean).astype(a.dtype)
            return jnp.where(take, new, a)

        average = jax.tree.map(leaf, state.average, new_params)
        n_averaged = jnp.where(take, n + 1, n).astype(jnp.int32)
        return updates, SwaState(average, n_averaged, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`.

    Attributes:
        inner_state: the fast optimizer's state.
        slow: the slow weights, shaped like the params (the initial params
            until the first synchronisation), in the average's dtype.
        steps_since_sync: fast steps since the last synchronisation (int32).
        hyperparams: the store of ``lookahead_alpha`` and
            ``lookahead_sync_period`` (int32).
    """

    inner_state: Any
    slow: Any
    steps_since_sync: jax.Array
    hyperparams: HyperparamState | EmptyState


def lookahead(
    tx: GradientTransformation,
    sync_period: int | Hyperparam = 5,
    alpha: ScalarOrSchedule | Hyperparam = 0.5,
    *,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Lookahead (Zhang et al., 2019): ``k`` steps forward with ``tx``, then one step back.

    The state keeps slow weights :math:`s` (the initial params at first).
    ``tx`` updates the (fast) params :math:`x`; after every ``sync_period``
    -th update, with :math:`x' = x + u` the fast params it reached,

    .. math:: s \leftarrow s + \alpha\, (x' - s), \qquad x \leftarrow s,

    the second by returning the update :math:`s - x` (so the params are
    :math:`x + (s - x)`, which is :math:`s` exactly whenever :math:`s - x`
    is, as for :math:`x` and :math:`s` within a factor 2 of each other).
    This is the paper's and the torch implementations' step (they copy
    :math:`s` into :math:`x`); optax's ``lookahead`` keeps both in a
    ``LookaheadParams`` pair instead, with the same slow weights bit for bit.
    Evaluate with the slow weights, :func:`averaged_params`. ``alpha`` and
    ``sync_period`` are the hyperparameters ``lookahead_alpha`` and
    ``lookahead_sync_period``.

    Args:
        tx: the fast optimizer (any gradxform or optax transform).
        sync_period: :math:`k`, the fast steps per synchronisation, an integer >= 1.
        alpha: :math:`\alpha` in (0, 1], the slow step size: a number, a
            schedule or a handle (1 makes lookahead plain ``tx``).
        dtype: dtype of the slow weights (default: each parameter's dtype).

    Returns:
        The wrapped optimizer; its state is :class:`LookaheadState`. Its
        update needs ``params``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.lookahead(gx.sgd(1.0), sync_period=2, alpha=0.5)
        >>> x = jnp.zeros(1)
        >>> state = tx.init(x)
        >>> for _ in range(2):  # fast: 0 -> 1 -> 2, then back to 0 + 0.5 * (2 - 0)
        ...     u, state = tx.update(jnp.array([-1.0]), state, x)
        ...     x = gx.apply_updates(x, u)
        >>> float(x[0]), float(gx.averaged_params(state)[0])
        (1.0, 1.0)
    """
    sync_period = _integer("sync_period", sync_period, 1)
    if not isinstance(alpha, Hyperparam) and checks.is_real_number(alpha):
        checks.real("alpha", alpha, lower=0, upper=1, lower_open=True)
    dtype = checks.optional_dtype("dtype", dtype, complex_ok=True)
    hp = Hyperparams(lookahead_sync_period=sync_period, lookahead_alpha=alpha)
    hp.check("lookahead_sync_period", lower=1, integer=True)
    hp.check("lookahead_alpha", lower=0, upper=1, lower_open=True)
    inner = with_extra_args(tx)

    def init_fn(params):
        tree.check_params(params)
        zero = jnp.zeros([], jnp.int32)
        return LookaheadState(inner.init(params), _copy(params, dtype), zero, hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:  # before the inner transform's own message
            _params_after("lookahead moves the params to its slow weights", params, updates)
        values, hyper = hp.step(state.hyperparams, extra_args)
        fast_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        fast = _params_after("", params, fast_updates)  # x'
        steps = state.steps_since_sync + 1
        sync = steps >= values["lookahead_sync_period"]
        slow, out = _synchronise(
            sync, values["lookahead_alpha"], state.slow, fast, params, fast_updates
        )
        steps = jnp.where(sync, 0, steps).astype(jnp.int32)
        return out, LookaheadState(inner_state, slow, steps, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _synchronise(sync, alpha, slow, fast, params, fast_updates):
    """Lookahead's step: where ``sync``, ``s <- s + alpha (x' - s)`` and the update ``s - x``;
    elsewhere ``s`` and the fast updates unchanged."""

    def slow_leaf(s, x):
        moved = s + tree.to_dtype(alpha, tree.real_dtype(s.dtype)) * (x.astype(s.dtype) - s)
        return jnp.where(sync, moved, s)

    slow = jax.tree.map(slow_leaf, slow, fast)

    def update_leaf(u, s, x):
        return jnp.where(sync, (s.astype(x.dtype) - x).astype(u.dtype), u)

    return slow, jax.tree.map(update_leaf, fast_updates, slow, params)


_KINDS = {EmaParamsState: "ema_params", SwaState: "swa", LookaheadState: "lookahead"}


def _is_averaging(x: Any) -> bool:
    return type(x) in _KINDS


def _averaging_states(opt_state: Any) -> list[Any]:
    """Every averaging state in ``opt_state``, outermost first (a lookahead's inner ones too)."""
    found = []
    for node in jax.tree.leaves(opt_state, is_leaf=_is_averaging):
        if _is_averaging(node):
            found.append(node)
            if isinstance(node, LookaheadState):
                found.extend(_averaging_states(node.inner_state))
    return found


def _read(state: Any) -> Any:
    if isinstance(state, EmaParamsState):
        c = state.correction
        return jax.tree.map(lambda m: m / tree.to_dtype(c, tree.real_dtype(m.dtype)), state.ema)
    if isinstance(state, SwaState):
        return state.average
    return state.slow


def _merge(averages: list[Any]) -> Any | None:
    """The averages of disjoint partition groups as one tree, or ``None`` if they overlap.

    A group's tree holds ``optax.MaskedNode()`` where another group's leaves are.
    """
    flat = [jax.tree.flatten(a, is_leaf=_is_masked) for a in averages]
    if len({treedef for _, treedef in flat}) != 1:
        return None
    merged = []
    for column in zip(*(leaves for leaves, _ in flat)):
        held = [leaf for leaf in column if not _is_masked(leaf)]
        if len(held) > 1:
            return None
        merged.append(held[0] if held else optax.MaskedNode())
    return jax.tree.unflatten(flat[0][1], merged)


def _is_masked(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def averaged_params(opt_state: Any, kind: str | None = None) -> Any:
    r"""The averaged parameters held in an optimizer state, for evaluation.

    Finds the state of :func:`ema_params`, :func:`swa` or :func:`lookahead`
    anywhere in ``opt_state`` (a chain, an accumulation or finite-check
    wrapper, a dict of states, partition groups) and returns what it holds:
    the (bias-corrected) EMA, the SWA average or the lookahead slow weights,
    shaped like the params, in the average's dtype. Averages kept per
    partition group (one in each group's chain) are put together into one
    tree; a leaf that no group averages is ``optax.MaskedNode()`` there. It
    reads the state and changes nothing, so training goes on from the same
    state; it is a pure function, usable inside ``jit``.

    Args:
        opt_state: an optimizer state holding one averaging state, or one per
            partition group (or several kinds, with ``kind`` picking one).
        kind: ``"ema_params"``, ``"swa"`` or ``"lookahead"``, to choose among
            several; ``None`` when there is one kind.

    Returns:
        The averaged parameters, a pytree shaped like the params.

    Raises:
        ValueError: when no averaging state (of that kind) is found, or
            several kinds are and ``kind`` is not given, or two states of
            the kind average the same leaf.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.chain(gx.adam(1e-3), gx.ema_params(0.99))
        >>> state = tx.init({"w": jnp.ones(2)})
        >>> gx.averaged_params(state)["w"].tolist()  # before the first update: the params
        [1.0, 1.0]
    """
    if kind is not None:
        checks.choice("kind", kind, tuple(_KINDS.values()))
    every = _averaging_states(opt_state)
    names = [_KINDS[type(s)] for s in every]
    found = [s for s in every if kind in (None, _KINDS[type(s)])]
    merged = None
    if len({type(s) for s in found}) == 1:
        merged = _read(found[0]) if len(found) == 1 else _merge([_read(s) for s in found])
    if merged is None:
        what = "one state of ema_params, swa or lookahead" if kind is None else f"a {kind} state"
        held = f"a state holding {len(names)}: {', '.join(names) or 'none'}"
        if len(set(names)) > 1 and kind is None:
            held += " (pass kind= to choose)"
        elif found:
            held += " averaging the same leaves"
        checks.fail("averaged_params' opt_state", f"an optimizer state holding {what}", held)
    return merged
