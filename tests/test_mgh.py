"""The shared test set (tests/mgh.py) against its paper: a long scipy solve from each
standard starting point ends at the published minimum (or a published other minimum)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy.optimize import least_squares

from tests.mgh import BY_NAME, PROBLEMS


def _published(value, p):
    """Whether ``value`` is one of the paper's listed values (5 significant digits)."""
    targets = (p.f_min, *p.f_other)
    return any(abs(value - t) <= max(1e-5 * abs(t), 1e-10) for t in targets)


@pytest.mark.slow
def test_long_scipy_solves_reach_the_published_minima(x64):
    reached = {}
    for p in PROBLEMS:
        residual = jax.jit(p.residual)
        jacobian = jax.jit(jax.jacfwd(p.residual))
        assert residual(p.x0).shape == (p.m,), p.name
        sol = least_squares(
            lambda x, fn=residual: np.asarray(fn(x)),
            p.x0,
            jac=lambda x, fn=jacobian: np.asarray(fn(x)),
            method="lm",
            xtol=1e-15,
            ftol=1e-15,
            gtol=1e-15,
            max_nfev=5000,
        )
        reached[p.name] = float(np.sum(sol.fun**2))
    wrong = {name: v for name, v in reached.items() if not _published(v, BY_NAME[name])}
    assert not wrong, wrong
    assert len(PROBLEMS) == 35 and len({p.name for p in PROBLEMS}) == 35
