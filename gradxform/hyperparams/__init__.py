r"""Hyperparameters that live in the optimizer state, each name in one place.

Every numeric hyperparameter of a gradxform transform (learning rate, decays,
eps, weight decay, the finite guard's limit, ...) is a number, a scalar array
or a schedule (a function of the step count), and its current value is stored
in the state, so that

* it can be read by name: ``gx.get_hyperparams(state)["learning_rate"]``, or
  ``optax.tree_utils.tree_get(state, "learning_rate")``;
* it can be changed between steps without recompiling a jitted step:
  ``state = gx.set_hyperparams(state, learning_rate=1e-4)``, checked as when
  built (a value set on a scheduled hyperparameter replaces the schedule
  until cleared with ``gx.set_hyperparams(state, learning_rate=None)``);
* a schedule is evaluated at the number of updates taken so far (0 at the
  first update), and the value stored is the one the latest update used; a
  scheduled value outside the range its blocks declared is clamped into it
  and counted (``<name>_clamped`` in the state).

Design: one store per optimizer, shared by handles
--------------------------------------------------

A :class:`Hyperparams` is a *store*: ``hp = Hyperparams(b1=0.9, lr=...)``
declares each hyperparameter once and ``hp["b1"]`` is a :class:`Hyperparam`,
a handle on it. A block (``ema_first_moment``, ``bias_correct``, ...) takes a
number, a schedule or a handle. Given a number it makes a store of its own, so
a block used alone works; given a handle it stores nothing and reads the value
that the handle's store computed for this step. ``hp.chain(*blocks)`` is
:func:`gradxform.chain` with the store in front: its state is
:class:`HyperparamChainState` ``(hyperparams, inner_state)``, and each update
first steps the store, then passes the values to the blocks (as the extra
argument ``hyperparams``). Adam is::

    hp = Hyperparams(learning_rate=lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    hp.chain(scale_by_adam(hp["b1"], hp["b2"], hp["eps"], eps_root=hp["eps_root"]),
             scale_by_learning_rate(hp["learning_rate"]))

so ``b1``, read by the first moment and by its bias correction, is one entry
of one store by construction, and ``gx.set_hyperparams`` or
``optax.tree_utils.tree_set`` changes it for both.

Blocks declare what they read, when they are built: ``check`` declares a
value's valid range (a :class:`Limit`) and validates it (``<name> must be
<what>; got <value>``; a schedule at step 0), ``use_complement`` asks for
``1 - value`` rounded once (see below) and ``use_count`` for the step count.
A store keeps one int32 count, saturating at ``2**31 - 1``, only if a block
reads it or a value is a schedule; so Adam's state holds one count (read by
both bias corrections and by any schedule) and SGD's none.

A store's state is a :class:`HyperparamState` ``(count, values,
complements, overrides, clamped, limits)``; ``limits``, the declared ranges,
holds no arrays (it is part of the tree structure), so that
:func:`set_hyperparams` applies the checks made when the blocks were built.
Values are float32, or float64 when a parameter leaf is float64 (or
complex128), cast to each leaf's dtype where used; integer hyperparameters
are int32.

Rounding: ``1 - decay``
-----------------------

For a decay given as a Python number, ``1 - decay`` is stored beside it under
the key ``one_minus_<name>``: the float32 rounding of the exact ``1 - decay``,
as optax and torch compute it in Python (``1 - float32(0.999)`` is not
``float32(1 - 0.999)``). Only decays whose complement an update reads have one.
:func:`set_hyperparams` sets the value and its complement together (from a
traced value too, so derivatives with respect to the value flow), and a
scheduled decay's complement is ``1 - value`` of this update's value. An
update uses the stored complement while it agrees with the value to within
two ulps, and ``1 - value`` otherwise, so a value written alone with
``optax.tree_utils.tree_set`` is used correctly. That check is a ``where`` of
scalars, fused into the kernels that read the complement.
"""

from gradxform.hyperparams.access import constant_hyperparams, get_hyperparams, set_hyperparams
from gradxform.hyperparams.limits import Limit, Limits
from gradxform.hyperparams.store import (
    Constant,
    Hyperparam,
    HyperparamChainState,
    Hyperparams,
    HyperparamState,
    ScalarOrSchedule,
    Values,
    increment_count,
)

__all__ = [
    "Constant",
    "Hyperparam",
    "HyperparamChainState",
    "HyperparamState",
    "Hyperparams",
    "Limit",
    "Limits",
    "ScalarOrSchedule",
    "Values",
    "constant_hyperparams",
    "get_hyperparams",
    "increment_count",
    "set_hyperparams",
]
