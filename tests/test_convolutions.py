"""``gx.canonical_convolutions``: every convolution in XLA CPU's library layout, in loops too.

References: the same function without the rewrite, compiled by XLA, which puts a
convolution at a program's top level in the library layout itself (so outside
loops the two agree bit for bit in float32, and to float64 rounding where the
summation order differs); and the compiled program's text, which says the layout
of each convolution (``dim_labels``: ``b01f_01io->b01f`` is the library's).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import gradxform as gx
from gradxform import convolutions

LIBRARY = "b01f_01io->b01f"
_DIM_LABELS = re.compile(r"dim_labels=([^,\s}]+)")


def layouts(fn, *args):
    """The layouts of the convolutions in ``jit(fn)``'s compiled program."""
    return set(_DIM_LABELS.findall(jax.jit(fn).lower(*args).compile().as_text()))


def conv(x, w):
    return lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def loss(w, x):
    return jnp.sum(jnp.tanh(conv(x, w)))


def descend(w, x, unroll=1):
    """Three gradient steps on the kernel, in a loop: the kernel's gradient sits in it."""
    return lax.fori_loop(0, 3, lambda i, w: w - 0.1 * jax.grad(loss)(w, x), w, unroll=unroll)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(16, 6, 6, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)) / 5, jnp.float32)
    return w, x


def test_a_kernel_gradient_in_a_loop_runs_in_the_library_layout(data):
    w, x = data
    assert layouts(descend, w, x) - {LIBRARY}  # XLA leaves the loop's gradient in its layout
    assert layouts(gx.canonical_convolutions(descend), w, x) == {LIBRARY}
    ours = jax.jit(gx.canonical_convolutions(descend))(w, x)
    unrolled = jax.jit(lambda w, x: descend(w, x, unroll=3))(w, x)  # no loop: XLA's own rewrite
    np.testing.assert_array_equal(ours, unrolled)
    # XLA's generic loop sums the 576 terms of each kernel entry in another order
    looped = jax.jit(descend)(w, x)
    atol = 64 * np.finfo(np.float32).eps * float(jnp.max(jnp.abs(looped)))
    np.testing.assert_allclose(ours, looped, rtol=0, atol=atol)


CASES = {  # (input shape, kernel shape, conv_general_dilated's options)
    "nchw_oihw_strided_valid": (
        (2, 3, 7, 6), (4, 3, 3, 2),
        dict(window_strides=(2, 1), padding="VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")),
    ),
    "1d_dilated_kernel": (
        (3, 9, 2), (3, 2, 4),
        dict(window_strides=(1,), padding="SAME", rhs_dilation=(2,),
             dimension_numbers=("NWC", "WIO", "NWC")),
    ),
    "3d": (
        (2, 4, 4, 3, 2), (2, 2, 2, 2, 3),
        dict(window_strides=(1, 1, 1), padding="SAME",
             dimension_numbers=("NDHWC", "DHWIO", "NDHWC")),
    ),
    "feature_groups_transposed_output": (
        (2, 5, 5, 4), (3, 3, 2, 6),
        dict(window_strides=(1, 1), padding="SAME", feature_group_count=2,
             dimension_numbers=("NHWC", "HWIO", "NCHW")),
    ),
    "input_dilation": (
        (2, 4, 4, 2), (3, 3, 2, 3),
        dict(window_strides=(1, 1), padding=((1, 1), (2, 0)), lhs_dilation=(2, 2),
             dimension_numbers=("NHWC", "HWIO", "NHWC")),
    ),
}  # fmt: skip


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_layout_and_option_gives_the_same_values(case):
    """The value and both gradients (their convolutions have other layouts and, for
    feature groups, batch groups), against the function without the rewrite."""
    x_shape, w_shape, options = CASES[case]
    rng = np.random.default_rng(1)
    x, w = (jnp.asarray(rng.normal(size=s)) for s in (x_shape, w_shape))

    def value_and_grads(x, w):
        f = lambda x, w: jnp.sum(jnp.sin(lax.conv_general_dilated(x, w, **options)))  # noqa: E731
        return f(x, w), jax.grad(f, argnums=(0, 1))(x, w)

    ours = jax.jit(gx.canonical_convolutions(value_and_grads))(x, w)
    theirs = jax.jit(value_and_grads)(x, w)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12), ours, theirs
    )
    rewritten = jax.make_jaxpr(gx.canonical_convolutions(value_and_grads))(x, w)
    assert not convolutions._has_other_layout(rewritten.jaxpr)
    assert convolutions._has_other_layout(jax.make_jaxpr(value_and_grads)(x, w).jaxpr)


NESTED = {
    "scan": lambda w, x: lax.scan(lambda w, _: (w - 0.1 * jax.grad(loss)(w, x), None), w, None, 2)[
        0
    ],
    "cond": lambda w, x: lax.cond(x[0, 0, 0, 0] > 0, jax.grad(loss), lambda w, x: w, w, x),
    "nested_jit": lambda w, x: descend(jax.jit(jax.grad(loss))(w, x), x),
    "checkpoint": lambda w, x: descend(jax.grad(jax.checkpoint(loss))(w, x), x),
}


@pytest.mark.parametrize("case", sorted(NESTED))
def test_programs_nested_in_loops_branches_and_jits_are_rewritten(data, case):
    w, x = data
    fn = NESTED[case]
    assert layouts(gx.canonical_convolutions(fn), w, x) == {LIBRARY}
    ours, theirs = jax.jit(gx.canonical_convolutions(fn))(w, x), jax.jit(fn)(w, x)
    atol = 64 * np.finfo(np.float32).eps * float(jnp.max(jnp.abs(theirs)))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=atol)


def test_a_function_without_convolutions_is_traced_unchanged():
    def fn(x, scale):
        return lax.fori_loop(0, 3, lambda i, x: jnp.sin(x) * scale["a"], x)

    args = (jnp.ones(3), {"a": jnp.asarray(2.0)})
    assert str(jax.make_jaxpr(gx.canonical_convolutions(fn))(*args)) == str(
        jax.make_jaxpr(fn)(*args)
    )


def test_pytrees_and_keyword_arguments_pass_through(data):
    w, x = data

    def fn(tree, x, *, steps):
        out = tree["w"]
        for _ in range(steps):
            out = out - 0.1 * jax.grad(loss)(out, x)
        return {"w": out, "n": tree["n"] + 1}

    ours = gx.canonical_convolutions(fn)({"w": w, "n": 1}, x, steps=2)
    theirs = fn({"w": w, "n": 1}, x, steps=2)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    np.testing.assert_array_equal(ours["w"], theirs["w"])  # no loop: XLA's own rewrite
    assert int(ours["n"]) == 2


def test_other_backends_run_the_function_unchanged(data, monkeypatch):
    w, x = data
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    traced = jax.make_jaxpr(gx.canonical_convolutions(descend))(w, x)
    assert convolutions._has_other_layout(traced.jaxpr)


def test_a_non_callable_is_refused_when_wrapped():
    with pytest.raises(TypeError, match="fn must be a callable; got 3"):
        gx.canonical_convolutions(3)
