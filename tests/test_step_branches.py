"""A first-order optimizer's step is straight-line code: no conditional, no loop.

Why it matters: on a GPU, XLA runs a ``conditional`` by copying its predicate to
the host and blocking the host until the device has finished all earlier work
(``ConditionalThunk``), once per conditional per step. The next kernels are
then launched only after that wait. Before 3aaad80 the hyperparameter store's
``1 - decay`` check was a ``lax.cond``, one to three per step. On the H200, the
optimizers that had it were slower than optax (AdamW 1.09x, Lion 1.35x,
schedule-free AdamW 1.15x, Muon 2.34x), and Adafactor, which had none, was
0.67x (docs/results/train_gpu.md, measured at ff24962).

Oracle: the program JAX hands to XLA (``jit(update).lower(...)``), searched for
StableHLO's branch and loop operations. Every optimizer alias of the package is
checked, so a new alias is covered when it is added to a module's ``__all__``.
Exempt, each because it skips expensive work on most steps: SOAP's and
Shampoo's periodic refresh of their bases and roots, and Sophia's periodic
Hessian-diagonal estimate.
"""

import importlib
import inspect
import re

import jax
import jax.numpy as jnp
import pytest

import gradxform as gx

MODULES = [  # the modules that define the optimizer aliases
    importlib.import_module(f"gradxform.{name}")
    for name in (
        "optimizers",
        "optimizers_classic",
        "optimizers_factored",
        "optimizers_matrix",
        "optimizers_more",
        "optimizers_schedule_free",
        "optimizers_sophia",
    )
]
NAMES = sorted({name for module in MODULES for name in module.__all__})
PERIODIC = {"soap", "shampoo", "sophia"}
# a matrix, a vector and a batch of matrices (Muon, Adafactor and the Kronecker
# optimizers take their matrix paths; the vector their fallbacks)
PARAMS = {"w": jnp.ones((4, 3)), "b": jnp.ones((3,)), "k": jnp.ones((2, 3, 4))}
_BRANCH = re.compile(r"\bstablehlo\.(case|if|while)\b")


def build(name):
    make = getattr(gx, name)
    takes_rate = "learning_rate" in inspect.signature(make).parameters
    return make(1e-3) if takes_rate else make()


def branches(tx, **extra):
    """The branch and loop operations in the lowered step ``tx.update``."""
    state = tx.init(PARAMS)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra))
    return _BRANCH.findall(step.lower(PARAMS, state, PARAMS).as_text())


def test_every_alias_is_listed():
    assert len(NAMES) >= 25
    assert PERIODIC <= set(NAMES)
    assert all(callable(getattr(gx, name)) for name in NAMES)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in PERIODIC])
def test_first_order_step_has_no_branch_or_loop(name):
    assert branches(build(name)) == []


def test_the_search_finds_a_periodic_refresh():
    """The exempt optimizers do branch, so the search above can fail."""
    assert "case" in branches(gx.soap(1e-3)) or "if" in branches(gx.soap(1e-3))
    assert branches(gx.shampoo(1e-3))
    value_fn = lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p))  # noqa: E731
    assert branches(gx.sophia(1e-3), value_fn=value_fn)
