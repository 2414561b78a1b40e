"""Curvature products: the one layer that both second-order solvers and Hessian tools use.

Two kinds of objective appear here.

* A closure ``f(params) -> scalar`` on any pytree of float arrays (a flat
  vector is a pytree of one leaf): :func:`hvp`, :func:`linearized_hvp` and
  :func:`dense_hessian` give the Hessian ``H = d^2 f / d params^2``;
  :func:`check_objective` validates such a closure.
* A loss of a model's outputs, ``f(params) = loss(model(params, x), y)``, with
  ``x`` and ``y`` pytrees whose leaves share a leading batch axis of ``N``
  examples: :func:`gauss_newton_product`, :func:`fisher_product` and
  :func:`empirical_fisher_product` give the positive semi-definite
  approximations of ``H`` used by natural-gradient, K-FAC-style and
  Hessian-free methods.

With ``J = d model(params, x) / d params`` (all outputs by all parameters),
``H_L`` the Hessian of ``loss`` with respect to the outputs, and ``g_i`` the
gradient of example ``i``'s loss, the matrices are::

    H     = J^T H_L J + sum_k (d loss / d out_k) (d^2 out_k / d params^2)
    GGN   = J^T H_L J                          (gauss_newton_product)
    F     = J^T F_out J                        (fisher_product)
    F_emp = (1/N) sum_i g_i g_i^T = G^T G / N  (empirical_fisher_product)

``F_out`` is the Fisher information of the model's predictive distribution
with respect to its outputs, averaged over the ``N`` examples. For softmax
cross-entropy on logits, ``F_out = H_L`` exactly (``diag(p) - p p^T`` per
example), so the Fisher *is* the GGN of the mean cross-entropy. For a
unit-variance Gaussian, ``F_out = I / N``, the GGN of ``0.5 * sum((out - y)**2) / N``;
the GGN of ``jnp.mean((out - y) ** 2)`` over ``(N, K)`` outputs is ``2 / K``
times it. The empirical Fisher uses the observed labels and equals neither
in general.

Two estimators of the Hessian's diagonal need no matrix either (Sophia's
curvature, :func:`gradxform.sophia`): :func:`hutchinson_diagonal`, the mean
of ``u * (H u)`` over random sign vectors ``u`` (unbiased for ``diag(H)``),
and :func:`gauss_newton_bartlett_diagonal`, ``B * g * g`` with ``g`` the
gradient of the mean cross-entropy at labels drawn from the model's own
softmax (unbiased for ``diag(GGN)``).

Every ``*_product`` evaluates the model once (``jax.linearize``) and returns
a function ``v -> M v`` on pytrees shaped like ``params``; each product then
costs one forward-mode and one reverse-mode pass through the linearised
model, and no ``n x n`` or ``N x n`` matrix is formed. Nothing here knows
about optimizers or spectra; ``second_order`` and ``hessian`` build on these
products and never on each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradxform import checks, tree

__all__ = [
    "check_objective",
    "dense_hessian",
    "empirical_fisher_product",
    "fisher_product",
    "gauss_newton_bartlett_diagonal",
    "gauss_newton_product",
    "hutchinson_diagonal",
    "hvp",
    "linearized_hvp",
]


Model = Callable[[Any, Any], Any]  # model(params, x) -> outputs
Loss = Callable[[Any, Any], jax.Array]  # loss(outputs, y) -> scalar
Product = Callable[[Any], Any]  # v -> M v on pytrees shaped like params


def _check_scalar(fun: Callable, args: tuple, what: str) -> None:
    out = jax.eval_shape(fun, *args)
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        checks.fail(what, "a real floating scalar", f"{shape} {dtype}")


def check_objective(f: Any, params: Any, name: str = "f") -> None:
    """Raises unless ``f`` is callable and ``f(params)`` is a real floating scalar.

    Traces ``f`` abstractly (``jax.eval_shape``); nothing is computed.

    Args:
        f: the candidate objective.
        params: the point, a pytree of real float arrays.
        name: how the messages call ``f``.

    Returns:
        None.

    Raises:
        TypeError: if ``f`` is not callable or a leaf of ``params`` is not a real float.
        ValueError: if ``f(params)`` is not a real floating scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import curvature
        >>> curvature.check_objective(lambda p: p * 2, jnp.ones(3))
        Traceback (most recent call last):
        ...
        ValueError: f(params) must be a real floating scalar; got '(3,) float32'
    """
    checks.callable_arg(name, f, "f(params) -> scalar")
    tree.check_real_floating(params, "params")
    _check_scalar(f, (params,), f"{name}(params)")


def hvp(f: Callable[[Any], jax.Array], params: Any, v: Any) -> Any:
    """``H v``: the Hessian of ``f`` at ``params`` times ``v`` (forward-over-reverse).

    Computes ``d/dt grad f(params + t v)`` at ``t = 0`` (``jax.jvp`` of
    ``jax.grad``): exact, and about the cost of two gradients.

    Args:
        f: the objective, ``f(params) -> scalar``.
        params: the point, a pytree of float arrays.
        v: the vector, shaped like ``params``.

    Returns:
        ``H v``, shaped like ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import curvature
        >>> f = lambda p: p[0] ** 2 * p[1]  # H = [[2 p1, 2 p0], [2 p0, 0]]
        >>> curvature.hvp(f, jnp.array([1.0, 3.0]), jnp.array([1.0, 0.0]))
        Array([6., 2.], dtype=float32)
    """
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def linearized_hvp(f: Callable[[Any], jax.Array], params: Any) -> Callable[[Any], Any]:
    """``v -> H v`` at a fixed point, linearising ``grad f`` once and reusing it.

    The forward pass and the residuals of ``grad f`` are computed once, so
    each later product costs about one gradient: the operator for many
    products at one point (Lanczos, trace estimation, CG).

    Args:
        f: the objective, ``f(params) -> scalar``.
        params: the point, a pytree of float arrays.

    Returns:
        A function ``v -> H v`` on pytrees shaped like ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import curvature
        >>> matvec = curvature.linearized_hvp(lambda p: jnp.sum(p**3), jnp.array([1.0, 2.0]))
        >>> matvec(jnp.ones(2))  # H = diag(6 p)
        Array([ 6., 12.], dtype=float32)
    """
    _, matvec = jax.linearize(jax.grad(f), params)
    return matvec


def dense_hessian(f: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """The dense Hessian of ``f`` at the flat vector ``x``, row ``i`` = ``H e_i``.

    The ``n`` products :func:`hvp` ``(f, x, e_i)``, batched with ``vmap``.
    ``jax.hessian`` stacks the same products as columns; stacking them as
    rows gives the same symmetric matrix without a transpose before a
    column-major LAPACK factorisation.

    Args:
        f: the objective on flat vectors, ``f(x) -> scalar``.
        x: the point, a 1-D array of size ``n``.

    Returns:
        The ``(n, n)`` Hessian in ``x``'s dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import curvature
        >>> curvature.dense_hessian(lambda x: x[0] ** 2 * x[1], jnp.array([1.0, 3.0]))
        Array([[6., 2.],
               [2., 0.]], dtype=float32)
    """
    basis = jnp.eye(x.size, dtype=x.dtype)
    return jax.vmap(lambda v: hvp(f, x, v))(basis)


def _linearize(fun: Callable[[Any], Any], params: Any):
    """``fun(params)``, ``v -> J v`` and ``u -> J^T u`` from one forward pass."""
    out, jvp = jax.linearize(fun, params)
    transpose = jax.linear_transpose(jvp, params)
    return out, jvp, lambda u: transpose(u)[0]


def _check_model(model: Any, params: Any) -> None:
    checks.callable_arg("model", model, "model(params, x) -> outputs")
    tree.check_real_floating(params, "params")


def gauss_newton_product(model: Model, loss: Loss, params: Any, x: Any, y: Any) -> Product:
    """``v -> J^T H_L J v``: the generalised Gauss-Newton matrix of ``loss(model(params, x), y)``.

    ``J v`` is a forward-mode product through the model, ``H_L`` the Hessian
    of ``loss`` with respect to the outputs (applied by :func:`linearized_hvp`
    at the outputs), and ``J^T`` a reverse-mode product back. The GGN drops the
    term of the Hessian that carries the model's second derivatives, so it is
    positive semi-definite whenever ``loss`` is convex in the outputs; it is
    the Hessian for a model linear in ``params``.

    Args:
        model: ``model(params, x) -> outputs``, a pytree of float arrays.
        loss: ``loss(outputs, y) -> scalar``, e.g. the batch mean of per-example losses.
        params: the point, a pytree of float arrays.
        x: the model's inputs (any pytree).
        y: the targets (any pytree), passed to ``loss`` unchanged.

    Returns:
        A function ``v -> J^T H_L J v`` on pytrees shaped like ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import curvature
        >>> model = lambda w, x: x @ w  # linear: the GGN is the Hessian X^T X / N
        >>> loss = lambda out, y: 0.5 * jnp.mean((out - y) ** 2)
        >>> x, y = jnp.array([[1.0, 0.0], [1.0, 2.0]]), jnp.zeros(2)
        >>> ggn = curvature.gauss_newton_product(model, loss, jnp.zeros(2), x, y)
        >>> ggn(jnp.array([1.0, 0.0]))
        Array([1., 1.], dtype=float32)
    """
    _check_model(model, params)
    checks.callable_arg("loss", loss, "loss(outputs, y) -> scalar")
    _check_scalar(lambda p: loss(model(p, x), y), (params,), "loss(model(params, x), y)")
    outputs, jvp, vjp = _linearize(lambda p: model(p, x), params)
    loss_hessian = linearized_hvp(lambda out: loss(out, y), outputs)
    return lambda v: vjp(loss_hessian(jvp(v)))


def _categorical_fisher(logits: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """``u -> (diag(p) - p p^T) u / N`` per example, ``p = softmax(logits)`` on the last axis."""
    p = jax.nn.softmax(logits, axis=-1)
    n = logits.shape[0]
    return lambda u: (p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)) / n


def _gaussian_fisher(means: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """``u -> u / N``: the Fisher of unit-variance Gaussians about ``means``."""
    n = means.shape[0]
    return lambda u: u / n


_OUTPUT_FISHERS = {"categorical": _categorical_fisher, "gaussian": _gaussian_fisher}


def _check_outputs(model: Model, params: Any, x: Any, least: int, likelihood: str) -> None:
    """Raises unless ``model(params, x)`` is one array with at least ``least`` axes."""
    out = jax.eval_shape(lambda p: model(p, x), params)
    if not isinstance(out, jax.ShapeDtypeStruct) or len(out.shape) < least:
        what = f"one array with at least {least} axes for likelihood={likelihood!r}"
        checks.fail("model(params, x)", what, getattr(out, "shape", out))


def fisher_product(
    model: Model, params: Any, x: Any, *, likelihood: str = "categorical"
) -> Product:
    """``v -> J^T F_out J v``: the Fisher information of the model's predictive distribution.

    The true Fisher ``F = (1/N) sum_i E_{y ~ p(y | x_i)}[s s^T]`` with
    ``s = grad_params log p(y | x_i)``: the expectation is over labels drawn
    from the model, so no labels are needed, and it is taken in closed form
    on the outputs (``F_out``), then pulled back by ``J``:

    * ``"categorical"``: ``model`` returns logits ``(N, ..., C)``, classes on
      the last axis, ``p = softmax(logits)``; ``F_out = (diag(p) - p p^T) / N``
      for every row. This equals the Hessian of softmax cross-entropy in the
      logits, so ``F`` is :func:`gauss_newton_product` of the cross-entropy
      summed over the middle axes and averaged over the ``N`` examples.
    * ``"gaussian"``: ``model`` returns means ``(N, ...)`` of unit-variance
      Gaussians; ``F_out = I / N``, so ``F = J^T J / N``: the GGN of
      ``0.5 * sum((out - y) ** 2) / N``. The GGN of ``jnp.mean((out - y) ** 2)``
      over ``(N, K)`` outputs is ``(2 / K) F``; a variance ``s^2`` divides ``F``
      by ``s^2``.

    Args:
        model: ``model(params, x) -> outputs``, one array with a leading axis of ``N`` examples.
        params: the point, a pytree of float arrays.
        x: the model's inputs (any pytree).
        likelihood: ``"categorical"`` (logits) or ``"gaussian"`` (means).

    Returns:
        A function ``v -> F v`` on pytrees shaped like ``params``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from gradxform import curvature
        >>> model = lambda w, x: x @ w  # logits of 3 classes
        >>> ce = lambda logits, y: -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits), -1))
        >>> x, y, w = jnp.eye(2), jnp.eye(3)[:2], jnp.ones((2, 3))
        >>> fisher = curvature.fisher_product(model, w, x)
        >>> ggn = curvature.gauss_newton_product(model, ce, w, x, y)
        >>> v = jnp.arange(6.0).reshape(2, 3)
        >>> bool(jnp.allclose(fisher(v), ggn(v)))
        True
    """
    _check_model(model, params)
    checks.choice("likelihood", likelihood, _OUTPUT_FISHERS)
    _check_outputs(model, params, x, 2 if likelihood == "categorical" else 1, likelihood)
    outputs, jvp, vjp = _linearize(lambda p: model(p, x), params)
    output_fisher = _OUTPUT_FISHERS[likelihood](outputs)
    return lambda v: vjp(output_fisher(jvp(v)))


def _num_examples(x: Any, y: Any) -> int:
    leaves = jax.tree.leaves((x, y))
    sizes = {int(jnp.shape(leaf)[0]) for leaf in leaves if jnp.ndim(leaf)}
    if len(sizes) != 1 or any(jnp.ndim(leaf) == 0 for leaf in leaves):
        shapes = [jnp.shape(leaf) for leaf in leaves]
        checks.fail("x and y", "arrays sharing one leading batch axis", shapes)
    return sizes.pop()


def empirical_fisher_product(model: Model, loss: Loss, params: Any, x: Any, y: Any) -> Product:
    """``v -> (1/N) sum_i g_i (g_i . v)``: the empirical Fisher, from per-example gradients.

    ``g_i = grad_params loss(model(params, x_i), y_i)`` with ``x_i``, ``y_i``
    example ``i`` as a batch of one (the leading axis kept, of size 1), so
    ``loss`` is the same batch loss the other products take. With ``G`` the
    ``(N, n)`` matrix of rows ``g_i`` (the Jacobian of the vector of
    per-example losses), the product is ``G^T (G v) / N``, computed as one
    forward- and one reverse-mode pass of that vector: ``G`` is never formed.
    Unlike :func:`fisher_product` it uses the observed labels ``y``.

    Args:
        model: ``model(params, x) -> outputs`` on a batch.
        loss: ``loss(outputs, y) -> scalar`` on a batch.
        params: the point, a pytree of float arrays.
        x: the inputs, a pytree whose leaves share a leading axis of ``N`` examples.
        y: the targets, with the same leading axis.

    Returns:
        A function ``v -> G^T G v / N`` on pytrees shaped like ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import curvature
        >>> model = lambda w, x: x @ w  # g_i = (x_i . w - y_i) x_i
        >>> loss = lambda out, y: 0.5 * jnp.mean((out - y) ** 2)
        >>> x, y = jnp.array([[1.0, 0.0], [1.0, 2.0]]), jnp.ones(2)
        >>> fisher = curvature.empirical_fisher_product(model, loss, jnp.zeros(2), x, y)
        >>> fisher(jnp.array([1.0, 0.0]))  # G = -x
        Array([1., 1.], dtype=float32)
    """
    _check_model(model, params)
    checks.callable_arg("loss", loss, "loss(outputs, y) -> scalar")
    n = _num_examples(x, y)

    def example_loss(p, xi, yi):  # example i as a batch of one
        xi, yi = jax.tree.map(lambda leaf: leaf[None], (xi, yi))
        return loss(model(p, xi), yi)

    def losses(p):
        return jax.vmap(example_loss, in_axes=(None, 0, 0))(p, x, y)

    first = jax.tree.map(lambda leaf: leaf[0], (x, y))
    _check_scalar(example_loss, (params, *first), "loss(model(params, x_i), y_i)")
    _, jvp, vjp = _linearize(losses, params)
    return lambda v: vjp(jvp(v) / n)


def _rademacher_like(key: jax.Array, params: Any, num_probes: int) -> Any:
    """``num_probes`` random sign vectors shaped like ``params`` (a leading probe axis)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    probes = [
        jax.random.rademacher(k, (num_probes, *jnp.shape(leaf)), jnp.asarray(leaf).dtype)
        for k, leaf in zip(keys, leaves)
    ]
    return jax.tree.unflatten(treedef, probes)


def hutchinson_diagonal(
    f: Callable[[Any], jax.Array], params: Any, key: jax.Array, num_probes: int = 1
) -> Any:
    """Hutchinson's estimate of ``diag(H)``: the mean of ``u * (H u)`` over random signs ``u``.

    Each probe ``u`` has independent entries ``+1`` or ``-1`` with equal
    probability, so ``E[u_i (H u)_i] = H_ii + sum_{j != i} H_ij E[u_i u_j] = H_ii``:
    the estimate is unbiased, its variance per probe at coordinate ``i`` is
    ``sum_{j != i} H_ij ** 2``, and it is exact, whatever the probe, when
    ``H`` is diagonal. One probe costs one :func:`hvp`; several share one
    linearisation (:func:`linearized_hvp`), batched with ``vmap``. The probe
    of each leaf is drawn in that leaf's dtype from its own key (``key``
    split once per leaf).

    Args:
        f: the objective, ``f(params) -> scalar``, on real float leaves.
        params: the point, a pytree of real float arrays.
        key: a PRNG key (``jax.random.key`` or ``jax.random.PRNGKey``).
        num_probes: how many probes to average, a Python int >= 1.

    Returns:
        The estimate, shaped (and typed) like ``params``.

    Raises:
        TypeError: if ``num_probes`` is not an integer.
        ValueError: if ``num_probes < 1``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from gradxform import curvature
        >>> f = lambda p: jnp.sum(p**3)  # H = diag(6 p): exact with any probe
        >>> curvature.hutchinson_diagonal(f, jnp.array([1.0, 2.0]), jax.random.key(0))
        Array([ 6., 12.], dtype=float32)
    """
    num_probes = checks.integer("num_probes", num_probes, minimum=1)
    probes = _rademacher_like(key, params, num_probes)
    if num_probes == 1:
        first = jax.tree.map(lambda u: u[0], probes)
        products = jax.tree.map(lambda hu: hu[None], hvp(f, params, first))
    else:
        products = jax.vmap(linearized_hvp(f, params))(probes)
    return jax.tree.map(lambda u, hu: jnp.mean(u * hu, axis=0), probes, products)


def gauss_newton_bartlett_diagonal(model: Model, params: Any, x: Any, key: jax.Array) -> Any:
    """Sophia's Gauss-Newton-Bartlett estimate of ``diag(GGN)`` for softmax cross-entropy.

    ``model(params, x)`` returns logits ``(N, ..., C)`` (classes on the last
    axis); its ``B = N * (positions per example)`` rows are ``B`` categorical
    predictions. A label ``y_b`` is drawn for every row from the model's own
    ``softmax``, and with ``g`` the gradient of the mean cross-entropy
    ``L(params) = -(1/B) sum_b log softmax(logits_b)[y_b]`` the estimate is
    ``B * g * g``. Since the rows' score vectors ``p_b - e_{y_b}`` have mean
    zero and covariance ``diag(p_b) - p_b p_b^T``, ``E[B g g^T]`` is the
    Gauss-Newton matrix ``J^T H_L J`` of the mean cross-entropy (whatever
    the observed labels), so the estimate is unbiased for its diagonal and
    is never negative. One forward and one reverse pass (``jax.vjp``); the
    sampled labels carry no gradient. For a loss that sums the positions of
    an example instead of averaging them, multiply by the positions per
    example (:func:`fisher_product` is that loss's GGN).

    Args:
        model: ``model(params, x) -> logits``, one array with at least 2 axes.
        params: the point, a pytree of real float arrays.
        x: the model's inputs (any pytree).
        key: a PRNG key for the labels.

    Returns:
        The estimate, shaped (and typed) like ``params``.

    Raises:
        TypeError: if ``model`` is not callable or a leaf of ``params`` is not a real float.
        ValueError: if ``model(params, x)`` is not one array with at least 2 axes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from gradxform import curvature
        >>> model = lambda w, x: x @ w  # 4 examples, 3 classes
        >>> x, w = jnp.ones((4, 2)), jnp.zeros((2, 3))
        >>> h = curvature.gauss_newton_bartlett_diagonal(model, w, x, jax.random.key(0))
        >>> h.shape, bool(jnp.all(h >= 0))
        ((2, 3), True)
    """
    _check_model(model, params)
    _check_outputs(model, params, x, 2, "categorical")
    logits, pullback = jax.vjp(lambda p: model(p, x), params)
    classes = logits.shape[-1]
    rows = logits.size // classes
    labels = jax.random.categorical(key, jax.lax.stop_gradient(logits), axis=-1)
    probs = jax.nn.softmax(logits, axis=-1)
    scores = (probs - jax.nn.one_hot(labels, classes, dtype=probs.dtype)) / rows
    (g,) = pullback(scores)
    return jax.tree.map(lambda leaf: rows * leaf * leaf, g)
