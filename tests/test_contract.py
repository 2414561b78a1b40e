"""The transform contract: state invariants, vmap, differentiability, errors, optax interop."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import ALIASES, SECOND_ORDER

PARAMS = {"layer": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}, "scale": jnp.array(1.5)}
GRADS = jax.tree.map(lambda p: 0.3 * p + 0.2, PARAMS)
SLOW = pytest.mark.slow


def signature(tree):
    return jax.tree.structure(tree), [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_update_keeps_state_structure_shapes_and_dtypes(name):
    tx = ALIASES[name]()
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    state = tx.init(PARAMS)
    _, new_state = jax.jit(tx.update)(GRADS, state, PARAMS)
    assert signature(new_state) == signature(state)


@pytest.mark.parametrize("name", ["sgd_momentum", "rmsprop", "adam"])
def test_update_under_vmap_equals_a_loop(name):
    tx = ALIASES[name]()
    batch = jax.tree.map(lambda g: jnp.stack([g, 2 * g, -g]), GRADS)
    params = jax.tree.map(lambda p: jnp.stack([p] * 3), PARAMS)
    states = jax.vmap(tx.init)(params)
    out, _ = jax.jit(jax.vmap(tx.update))(batch, states, params)
    update = jax.jit(tx.update)
    for i in range(3):
        g_i, out_i = (jax.tree.map(lambda a, i=i: a[i], t) for t in (batch, out))
        want, _ = update(g_i, tx.init(PARAMS), PARAMS)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), out_i, want)


@pytest.mark.parametrize("name", ["sgd_momentum", "adam", pytest.param("rmsprop", marks=SLOW)])
def test_jacfwd_equals_jacrev_through_five_steps(name):
    tx = ALIASES[name]()

    def five_steps(x):
        params = {"x": x}
        state = tx.init(params)
        for _ in range(5):
            grads = {"x": jnp.sin(params["x"]) + 0.5 * params["x"] ** 3}
            updates, state = tx.update(grads, state, params)
            params = gx.apply_updates(params, updates)
        return params["x"]

    with jax.enable_x64(True):
        x0 = jnp.array([0.3, -1.2, 2.0], jnp.float64)
        fwd = jax.jit(jax.jacfwd(five_steps))(x0)
        rev = jax.jit(jax.jacrev(five_steps))(x0)
        np.testing.assert_allclose(fwd, rev, rtol=1e-10, atol=1e-12)
        # and both agree with central finite differences
        eps, f = 1e-6, jax.jit(five_steps)
        fd = np.stack([(f(x0 + eps * e) - f(x0 - eps * e)) / (2 * eps) for e in jnp.eye(3)], axis=1)
        np.testing.assert_allclose(fwd, fd, rtol=1e-5, atol=1e-7)


def test_mismatched_grads_name_the_first_differing_path():
    tx = gx.adam(0.1)
    state = tx.init(PARAMS)
    bad = {
        "layer": {"w": GRADS["layer"]["w"], "bias": GRADS["layer"]["b"]},
        "scale": GRADS["scale"],
    }
    with pytest.raises(ValueError, match=r"\['layer'\]\['bias'\].*\['layer'\]\['b'\]"):
        tx.update(bad, state, PARAMS)
    with pytest.raises(ValueError, match="has 2 leaves"):
        gx.apply_updates(PARAMS, {"layer": GRADS["layer"]})
    with pytest.raises(ValueError, match="params"):
        gx.adamw(0.1).update(GRADS, gx.adamw(0.1).init(PARAMS), {"other": jnp.ones(2)})


def test_weight_decay_without_params_is_a_clear_error():
    tx = gx.add_decayed_weights(1e-3)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(GRADS, tx.init(PARAMS))


class _ScaleByValue:
    """A test-only transform that needs the ``value`` extra argument."""

    @staticmethod
    def make():
        def init_fn(params):
            return optax.EmptyState()

        def update_fn(updates, state, params=None, *, value, **extra):
            return jax.tree.map(lambda u: u * value, updates), state

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def test_gradxform_inside_optax_chain_and_optax_inside_gradxform_chain():
    value = jnp.array(3.0)
    ours_then_theirs = optax.chain(gx.adam(0.1), _ScaleByValue.make(), optax.scale(0.5))
    theirs_then_ours = gx.chain(optax.scale_by_adam(), _ScaleByValue.make(), gx.scale(-0.05))
    u1, _ = ours_then_theirs.update(GRADS, ours_then_theirs.init(PARAMS), PARAMS, value=value)
    u2, _ = theirs_then_ours.update(GRADS, theirs_then_ours.init(PARAMS), PARAMS, value=value)
    reference, _ = optax.adam(0.1).update(GRADS, optax.adam(0.1).init(PARAMS), PARAMS)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, 1.5 * b, rtol=1e-6), u1, reference)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, 1.5 * b, rtol=1e-6), u2, reference)


def test_plain_optax_transform_in_gx_chain_ignores_extra_args():
    tx = gx.chain(optax.clip(0.1), gx.sgd(1.0))  # optax.clip takes no extra args
    u, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS, value=1.0, grad=GRADS, value_fn=jnp.sum)
    jax.tree.map(lambda a, g: np.testing.assert_allclose(a, -np.clip(g, -0.1, 0.1)), u, GRADS)


def test_optax_utilities_work_on_gradxform_states():
    tx = optax.MultiSteps(gx.adam(0.1), every_k_schedule=2)
    state = tx.init(PARAMS)
    u, state = tx.update(GRADS, state, PARAMS)
    assert all(np.all(x == 0) for x in jax.tree.leaves(u))  # accumulating
    u, state = tx.update(GRADS, state, PARAMS)
    want, _ = gx.adam(0.1).update(GRADS, gx.adam(0.1).init(PARAMS), PARAMS)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), u, want)


@pytest.mark.parametrize("name", sorted({**ALIASES, **SECOND_ORDER}))
def test_init_on_shape_dtype_structs_names_the_leaf_and_eval_shape_gives_the_state(name):
    tx = {**ALIASES, **SECOND_ORDER}[name]()
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    with pytest.raises(TypeError, match=r"the leaf at \['b'\] is a ShapeDtypeStruct"):
        tx.init(abstract)
    shapes = jax.eval_shape(tx.init, abstract)
    concrete = tx.init(params)
    assert jax.tree.structure(shapes) == jax.tree.structure(concrete)
    for s, c in zip(jax.tree.leaves(shapes), jax.tree.leaves(concrete)):
        assert (s.shape, s.dtype) == (c.shape, c.dtype)


def test_the_namespace_lists_the_public_api_only():
    """``dir(gx)`` (tab completion) shows ``__all__``, not the implementation modules."""
    modules = {name for name, value in vars(gx).items() if isinstance(value, types.ModuleType)}
    internal = modules - set(gx.__all__)
    assert {"base", "optimizers", "second_order", "transforms"} <= internal
    listed = set(dir(gx))
    assert not listed & internal
    assert {name for name in listed if not name.startswith("__")} == set(gx.__all__)
    assert {"hessian", "curvature", "schedules", "tree"} <= listed & modules
    assert all(hasattr(gx, name) for name in gx.__all__)


DONATED = {
    **ALIASES,
    **SECOND_ORDER,
    "bfgs": lambda: gx.bfgs(),
    "newton": lambda: gx.newton(),
    "apply_if_finite": lambda: gx.apply_if_finite(gx.sgd(0.1)),
    "partition": lambda: gx.partition(
        {"a": gx.adam(0.1), "b": gx.sgd(0.1, 0.9)}, {"layer": "a", "scale": "b"}
    ),
    "accumulate": lambda: gx.accumulate(gx.adam(0.1), every=2),
    "averaging": lambda: gx.chain(gx.ema_params(0.9), gx.swa(2), gx.lookahead(gx.sgd(0.1))),
    "reduce_on_plateau": lambda: gx.reduce_on_plateau(),
}


@pytest.mark.parametrize("name", DONATED)
def test_init_gives_every_state_leaf_its_own_buffer_so_the_state_can_be_donated(name):
    """A buffer shared by two leaves makes a donating step fail ("donate the same buffer
    twice"), which is how a training loop passes its state (issue #17 found three)."""
    state = DONATED[name]().init(PARAMS)
    leaves = jax.tree.leaves(state)
    assert len({id(leaf) for leaf in leaves}) == len(leaves), name
    bumped = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)(state)
    assert jax.tree.structure(bumped) == jax.tree.structure(state)
