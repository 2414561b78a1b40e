"""The Hessian tools' programs compile with the solver options at top level, and run as
plain ``jit`` inside another trace (where JAX refuses compiler options) or on an XLA
that does not know them; every route gives the dense answer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from gradxform import _xla_options
from gradxform.hessian import operators

pytestmark = pytest.mark.usefixtures("x64")

SPECTRUM = np.array([-2.0, 0.5, 1.0, 3.0, 7.0])


def quadratic(scale):
    return lambda p: 0.5 * jnp.sum(scale * jnp.asarray(SPECTRUM) * p**2)


F = quadratic(1.0)  # one objective object: its programs are cached across the tests


def test_eigenpairs_take_the_solver_options_and_batched_products_the_defaults():
    """Eigenpairs apply the operator to one vector at a time: compiled with the solver
    options. Hutch++ batches its products: compiled with XLA's defaults."""
    assert _xla_options.solver_options() == {"xla_cpu_use_fusion_emitters": False}
    solver = operators._on_hessian_solver_compiled._cache_size
    default = operators._on_hessian_compiled._cache_size
    before = solver(), default()
    pairs = gx.hessian.hessian_eigenpairs(F, jnp.zeros(5), k=2, which="both", tol=1e-10)
    assert (solver(), default()) == (before[0] + 1, before[1])
    np.testing.assert_allclose(pairs.values, [-2.0, 0.5, 7.0, 3.0], rtol=1e-10)
    assert bool(pairs.converged.all())
    trace = gx.hessian.trace(F, jnp.zeros(5), num_matvecs=15)
    assert (solver(), default()) == (before[0] + 1, before[1] + 1)
    np.testing.assert_allclose(trace.estimate, SPECTRUM.sum(), rtol=1e-10)


def test_inside_jit_and_vmap_the_tools_are_part_of_the_callers_program():
    def top(scale, params):  # the objective closes over a tracer; the params are one too
        return gx.hessian.hessian_eigenpairs(quadratic(scale), params, tol=1e-10).values[0]

    in_jit = jax.jit(top)(2.0, jnp.zeros(5))
    in_vmap = jax.vmap(top)(jnp.array([1.0, 3.0]), jnp.zeros((2, 5)))
    np.testing.assert_allclose(in_jit, 14.0, rtol=1e-10)
    np.testing.assert_allclose(in_vmap, [7.0, 21.0], rtol=1e-10)


def test_nested_through_a_closure_only_runs_in_the_callers_program():
    """Concrete arguments, yet inside a trace: the objective's closure holds the tracer."""

    @jax.jit
    def trace_of(scale):
        return gx.hessian.trace(quadratic(scale), jnp.zeros(5), num_matvecs=15).estimate

    # Hutch++ with 15 >= 3 * 5 products: the sketch spans the space, the trace is exact
    np.testing.assert_allclose(trace_of(2.0), 2 * SPECTRUM.sum(), rtol=1e-10)


def test_an_xla_without_the_options_gets_the_default_compiler(monkeypatch):
    monkeypatch.setattr(_xla_options, "_SOLVER_OPTIONS", {"xla_no_such_option": True})
    _xla_options.solver_options.cache_clear()
    try:
        assert _xla_options.solver_options() == {}
        solve = _xla_options.SolverJit(lambda a, b: jnp.linalg.solve(a, b))
        a, b = np.array([[4.0, 1.0], [1.0, 3.0]]), np.array([1.0, 2.0])
        np.testing.assert_allclose(solve(a, b), np.linalg.solve(a, b), rtol=1e-12)
        assert solve._cache_size() == 1  # its attributes are those of the program that ran
    finally:
        monkeypatch.undo()
        _xla_options.solver_options.cache_clear()
    assert _xla_options.solver_options() == {"xla_cpu_use_fusion_emitters": False}


def test_a_refusal_of_the_options_inside_a_trace_falls_back_to_a_plain_jit(monkeypatch):
    """Where JAX refuses the options on a nested call with concrete arguments, the call is
    made again as a plain ``jit``; any other error is raised."""
    solve = _xla_options.SolverJit(lambda x: 2 * x)

    def refuse(*args):
        raise ValueError("`compiler_options` can only be passed to top-level `jax.jit`")

    monkeypatch.setattr(solve, "_top", refuse)
    np.testing.assert_array_equal(solve(np.array([1.0, 2.0])), [2.0, 4.0])

    def fail(*args):
        raise ValueError("something else")

    monkeypatch.setattr(solve, "_top", fail)
    with pytest.raises(ValueError, match="something else"):
        solve(np.array([1.0]))


def test_a_streamed_objectives_tools_all_take_the_solver_options():
    """Its products are host callbacks, not part of the program: every tool's program is
    the driver alone. The trace of ``mean_b(b w^2)`` over examples 1, 1, 4 is 2 mean(b) = 4."""
    batches = [np.array([[1.0], [1.0]]), np.array([[4.0]])]
    objective = gx.hessian.dataset_mean(lambda w, b: jnp.mean(b[:, 0] * w**2), batches)
    solver = operators._on_hessian_solver_compiled._cache_size
    default = operators._on_hessian_compiled._cache_size
    before = solver(), default()
    estimate = gx.hessian.trace(objective, jnp.ones(1), num_matvecs=3).estimate
    assert (solver(), default()) == (before[0] + 1, before[1])
    np.testing.assert_allclose(estimate, 4.0, rtol=1e-12)
