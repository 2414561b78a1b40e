"""Objectives averaged over a data source that streams, and their curvature operators.

:func:`dataset_mean` describes ``F(params) = sum_b N_b L_b(params) / sum_b N_b``,
the mean of a per-batch loss ``L_b`` over a data set of batches of ``N_b``
examples (``N_b`` is the batch's leading axis), together with which curvature
of it to analyse: the Hessian, or for ``loss(model(params, x), y)`` the
generalised Gauss-Newton matrix, the Fisher or the empirical Fisher
(:mod:`gradxform.curvature`). Every spectral tool in :mod:`gradxform.hessian`
takes the record in place of ``f``.

Two kinds of data source:

* streamed: a list of batches, a re-iterable loader (anything whose
  ``iter()`` gives a fresh iterator, e.g. a grain or tf.data-style data set),
  or a zero-argument callable returning a fresh iterator. Each product is one
  pass in the source's order: a jitted per-batch product (compiled once per
  batch shape) accumulated on the device, in float64 when ``jax_enable_x64``
  is set, weighted by ``N_b``. The solvers stay compiled; their product is a
  host callback (``jax.pure_callback``) that runs the pass, and the vectors of
  a batched product (the probes of a trace or density estimate) share it.
  Only the batch in flight is held, so memory does not grow with the data set.
* stacked: a pytree of arrays whose leaves share a leading axis of ``B``
  equal batches (as for :func:`~gradxform.hessian.batch_mean`): the products
  run as one compiled ``lax.map`` inside the solver, with no callback.

Errors are raised, never hidden: an empty source, a one-shot iterator, and a
batch whose structure, trailing shapes or dtypes differ from the first batch's
(named by its index; the leading axis may change, as for a smaller last
batch). A batch whose product or loss is NaN or infinite is reported, not
averaged in silently: the result's ``finite`` is False and its
``nonfinite_batch`` is the index of the first such batch, on both paths.

On JAX's CPU backend a streamed pass runs inside the tool's compiled loop: the
loop holds one thread of XLA's CPU thread pool while the pass's per-batch
programs run on the others. XLA sizes that pool by the CPUs the process may use,
or by the environment variable ``NPROC`` when it is set before JAX starts its
CPU backend. With the default pool a pass inside a tool runs on one thread
fewer (about 1.9x slower than the same pass outside one on two cores), and on
one CPU the two would wait for each other forever, so there the tools raise.
``NPROC`` set to the CPUs plus one gives the pass every core (measured equal to
the pass outside a tool; see docs/results/hessian_scale_cpu.md and the guide's
"Streaming on CPU: threads"). A stacked source needs no callback.

``progress=True`` writes a one-line report of each streamed pass to stderr
(pass, batch ``i/N``, examples, seconds), rewritten in place.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gradxform import checks, tree
from gradxform.hessian import _vectors as V
from gradxform.hessian._progress import ProgressLine
from gradxform.hessian.kinds import _NAMED_LOSSES, CURVATURES, _Kind
from gradxform.hessian.operators import FlatOperator

__all__ = ["DatasetObjective", "PassReport", "dataset_mean"]


class PassReport(NamedTuple):
    """What the latest data pass of a :class:`DatasetObjective` saw.

    Attributes:
        passes: data passes made since the objective was built.
        batches: batches in the latest pass.
        examples: examples (sum of the leading axes) in the latest pass.
        nonfinite_batch: the index of the first batch whose product or loss was
            NaN or infinite in any pass of the latest tool call, or None.
    """

    passes: int
    batches: int
    examples: int
    nonfinite_batch: int | None


class DatasetObjective:
    """An objective averaged over a data source, with the curvature to analyse.

    Built by :func:`dataset_mean`; the spectral tools take it in place of
    ``f``. For a streamed source a tool compiles once per parameter shapes and
    options, whatever the objective (the products are host callbacks); the
    per-batch products compile once per (loss, model, curvature) and batch
    shape. A stacked source is compiled with its data, once per objective.

    Besides the attributes, ``kind`` is ``(loss, model, curvature,
    likelihood)``, the per-batch products' compile-cache key, and ``report``
    the :class:`PassReport` of the latest pass.

    Attributes:
        loss: the per-batch loss (see :func:`dataset_mean`).
        batches: the data source, as given.
        model: ``model(params, x)`` or None.
        curvature: ``"hessian"``, ``"ggn"``, ``"fisher"`` or ``"empirical_fisher"``.
        likelihood: ``"categorical"`` or ``"gaussian"`` for the Fisher, else None.
        stacked: True for a stacked pytree of batches (one compiled scan).
        progress: the reporter of the streamed passes (a stderr progress line), or None.
    """

    def __init__(
        self,
        loss: Any,
        batches: Any,
        model: Any,
        curvature: str,
        likelihood: str | None,
        stacked: bool,
        progress: Any = None,
    ) -> None:
        self.loss, self.model, self.curvature = loss, model, curvature
        self.likelihood, self.stacked, self.progress = likelihood, stacked, progress
        self.kind = _Kind(loss, model, curvature, likelihood)
        self.batches = self._batches = batches
        self._signature: Any = None
        self._first_description = ""
        self._nonfinite: int | None = None
        self._error: BaseException | None = None
        self.report = PassReport(0, 0, 0, None)

    # ----------------------------------------------------------- per-batch pieces
    def batch_loss(self, params: Any, batch: Any) -> jax.Array:
        """The loss of one batch at ``params`` (traceable).

        Args:
            params: the point.
            batch: one batch (``(x, y)`` with a model).

        Returns:
            The scalar loss.
        """
        return self.kind.batch_loss(params, batch)

    def batch_product(self, params: Any, batch: Any) -> Callable[[Any], Any]:
        """``v -> M_b v`` for one batch: the curvature of ``self.curvature`` (traceable).

        Args:
            params: the point.
            batch: one batch.

        Returns:
            The product on pytrees shaped like ``params``.
        """
        return self.kind.batch_product(params, batch)

    # ----------------------------------------------------------------- the passes
    def iterate(self) -> Iterator[Any]:
        """A fresh iterator over the batches (streamed sources only).

        Returns:
            An iterator, in the source's order.
        """
        source = self._batches
        it = source() if callable(source) else iter(source)
        if not isinstance(it, Iterator):
            it = iter(it)
        return it

    def value(self, params: Any) -> jax.Array:
        """The data set mean of the loss at ``params``, in one pass.

        Args:
            params: the point.

        Returns:
            The scalar mean (float64 when ``jax_enable_x64`` is set).
        """
        self._check_at(params)
        if self.stacked:
            return self.run(lambda: _stacked_mean(self, params, self.batch_loss))
        work = _accumulation_dtype(V.dtype_of(V.space(params)))
        return self.run(lambda: self._host_pass(_value_step, params, None, jnp.zeros([], work)))

    def grad(self, params: Any) -> Any:
        """The data set mean of the gradient at ``params``, in one pass.

        Args:
            params: the point.

        Returns:
            The gradient, shaped like ``params`` (in the params' dtype).
        """
        self._check_at(params)
        if self.stacked:
            g = self.run(lambda: _stacked_mean(self, params, jax.grad(self.batch_loss)))
        else:
            init = jax.tree.map(lambda x: jnp.zeros(np.shape(x), _work(x)), params)
            g = self.run(lambda: self._host_pass(_grad_step, params, None, init))
        return V.cast_like(g, V.space(params))

    def operator(self, params: Any) -> FlatOperator:
        """The curvature at ``params`` as a :class:`~gradxform.hessian.FlatOperator`.

        For a streamed source the ``matvec`` is a host callback (usable in
        ``jit``, ``vmap`` and loops: a batched call makes one pass for all its
        vectors); errors in a pass are raised by the tools, or by
        :meth:`check` after a direct use.

        Args:
            params: the point.

        Returns:
            The operator on flat vectors in ``ravel_pytree`` order.
        """
        self._check_at(params)
        flat, unravel = ravel_pytree(params)  # the public flat view; the tools use pytrees
        tree_matvec = self._tree_operator_at(params)

        def matvec(v):
            return ravel_pytree(tree_matvec(unravel(v)))[0].astype(v.dtype)

        return FlatOperator(matvec, int(flat.size), flat.dtype, unravel)

    def _tree_operator_at(self, params: Any) -> Callable[[Any], Any]:
        """``v -> M v`` on pytrees shaped like ``params`` (the spectral tools' operator)."""
        if self.stacked:
            return functools.partial(_stacked_matvec, self, params)
        return _streamed_matvec(lambda: self, params)

    @property
    def cache_key(self) -> Any:
        """What the tools compile for: one solver serves every streamed objective
        (its products are host callbacks); a stacked one is compiled with its data."""
        return self if self.stacked else _STREAM

    def matrix(self, params: Any) -> jax.Array:
        """The dense ``(n, n)`` curvature in one pass (``n`` products per batch): small models only.

        Args:
            params: the point.

        Returns:
            The matrix, rows and columns in ``ravel_pytree`` order.
        """
        op = self.operator(params)
        return self.run(lambda: jax.vmap(op.matvec)(jnp.eye(op.size, dtype=op.dtype)))

    def run(self, compute: Callable[[], Any]) -> Any:
        """``compute()``, re-raising its passes' errors and reporting non-finite batches.

        Args:
            compute: a function using :meth:`operator`'s products.

        Returns:
            What ``compute`` returns, with ``finite=False`` and
            ``nonfinite_batch`` set (for records with those fields) when a batch was
            not finite.
        """
        self._error, self._nonfinite = None, None
        try:
            with _streaming(self):
                result = jax.block_until_ready(compute())
            if self.stacked:
                jax.effects_barrier()  # the scan's non-finite reports (debug callbacks) are in
        finally:
            if self.progress is not None:
                self.progress.close()
        return self.check(result)

    def check(self, result: Any = None) -> Any:
        """Raises the first error of the passes since the last :meth:`run`; marks ``result``.

        Args:
            result: a tool's result record, or None.

        Returns:
            ``result``, with ``finite=False`` and ``nonfinite_batch`` set when a batch
            was not finite.
        """
        error, self._error = self._error, None
        if error is not None:
            raise error
        bad = self._nonfinite
        self.report = self.report._replace(nonfinite_batch=bad)
        if bad is not None:
            message = f"batch {bad} gave a NaN or infinite product or loss"
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        if bad is not None and hasattr(result, "_replace") and hasattr(result, "nonfinite_batch"):
            result = result._replace(finite=jnp.asarray(False), nonfinite_batch=bad)
            if hasattr(result, "converged"):
                result = result._replace(converged=jnp.zeros_like(result.converged))
        return result

    def _host_matvec(self, leaves, vs, treedef, shapes):
        """The host side of a streamed product: one pass for all the vectors in ``vs``
        (see :func:`_host_products`); none for a NaN vector or after a failed pass."""
        return _host_products(self, leaves, vs, treedef, shapes, self._pass_products)

    def _pass_products(self, params, vectors):
        """One pass's products of the stacked ``vectors``, or None (no pass made)."""
        if self._error is not None or not bool(V.finite(vectors)):
            # a pass already failed (the tool raises it when it returns), or a NaN product
            # came back as a vector: no batch is to blame, and no pass is made
            return None
        init = jax.tree.map(lambda x: jnp.zeros(x.shape, _work(x)), vectors)
        return self._host_pass(_product_step, params, vectors, init)

    def _host_pass(self, step, params, vectors, init):
        """One pass: ``step`` per batch, weighted by ``N_b``, divided by ``sum N_b``."""
        acc, total, bad, count = init, 0, jnp.asarray(-1), 0
        progress, known = self.progress, (self.report.batches or None)
        if progress is not None:
            progress.start()
        for index, batch in enumerate(self.iterate()):
            size = self._check_batch(index, batch)
            index_ = jnp.asarray(index)
            acc, bad = step(self.kind, params, batch, vectors, acc, float(size), index_, bad)
            total, count = total + size, count + 1
            if progress is not None:
                progress.update(self.report.passes + 1, count, known, total)
        if progress is not None and count:
            progress.update(self.report.passes + 1, count, count, total, force=True)
        if count == 0:
            checks.fail("batches", "a source that yields at least one batch", "an empty pass")
        bad = int(bad)
        if bad >= 0 and self._nonfinite is None:
            self._nonfinite = bad  # the first pass that met one names it
        self.report = PassReport(self.report.passes + 1, count, total, self.report.nonfinite_batch)
        return jax.tree.map(lambda a: a / total, acc)

    def _note_nonfinite(self, bad: Any) -> None:
        """Host side of the stacked scan's report: the first non-finite batch (``-1``: none)."""
        bad = np.asarray(bad).ravel()
        bad = bad[bad >= 0]
        if bad.size and (self._nonfinite is None or int(bad.min()) < self._nonfinite):
            self._nonfinite = int(bad.min())

    def _check_batch(self, index: int, batch: Any) -> int:
        """``N_b``; raises unless the batch has batch 0's structure, trailing shapes and dtypes."""
        leaves, treedef = jax.tree.flatten(batch)
        if not leaves or any(np.ndim(leaf) == 0 for leaf in leaves):
            what = "a pytree of arrays with a leading batch axis"
            checks.fail(f"batch {index}", what, _describe(batch))
        sizes = {int(np.shape(leaf)[0]) for leaf in leaves}
        if len(sizes) != 1:
            checks.fail(f"batch {index}", "leaves sharing one leading batch axis", _describe(batch))
        signature = (treedef, tuple((np.shape(leaf)[1:], np.result_type(leaf)) for leaf in leaves))
        if self._signature is None:
            self._signature = signature
        elif signature != self._signature:
            what = f"shaped like batch 0 (the leading axis aside), {self._first_description}"
            checks.fail(f"batch {index}", what, _describe(batch))
        else:
            return sizes.pop()
        self._first_description = _describe(batch)
        return sizes.pop()

    def _check_tool(self, params: Any) -> None:
        """:meth:`_check_at`, and for a streamed source :func:`_check_nested_products`."""
        self._check_at(params)
        if not self.stacked:
            _check_nested_products(params)

    def _check_at(self, params: Any) -> None:
        """Raises unless the loss of the first batch at ``params`` is a real floating scalar."""
        first = jax.tree.map(lambda leaf: leaf[0], self._batches) if self.stacked else None
        if first is None:
            first = next(self.iterate(), _EMPTY)
            if first is _EMPTY:
                checks.fail("batches", "a source that yields at least one batch", "an empty pass")
        tree.check_real_floating(params, "params")
        out = jax.eval_shape(self.batch_loss, params, first)
        if getattr(out, "shape", None) != () or not jnp.issubdtype(out.dtype, jnp.floating):
            name = "loss(model(params, x), y)" if self.model is not None else "loss(params, batch)"
            checks.fail(name, "a real floating scalar", f"{getattr(out, 'shape', out)}")


def _streamed_matvec(objective_of: Callable[[], Any], params: Any) -> Callable[[Any], Any]:
    """``v -> M v`` on pytrees shaped like ``params``: a host callback making a data pass.

    The callback (``jax.pure_callback``) takes and returns one array per leaf,
    each shaped as its leaf behind the leading axes of ``vmap``: no flat vector
    is joined on either side, and a batched call (the probes of an estimator)
    makes one pass for all its vectors.
    """
    leaves, treedef = jax.tree.flatten(params)
    shapes = [np.shape(leaf) for leaf in leaves]
    dtypes = [np.dtype(jnp.result_type(leaf)) for leaf in leaves]
    x64 = _x64()

    def host(p, vs):  # may run on a runtime thread: the caller's x64 setting carried over
        p = [_from_wire(leaf, d) for leaf, d in zip(p, dtypes)]
        vs = [_from_wire(v, d) for v, d in zip(vs, dtypes)]
        with jax.enable_x64(x64):
            out = objective_of()._host_matvec(p, vs, treedef, shapes)
        return [_to_wire_host(o) for o in out]

    def matvec(v):
        wired = [_to_wire(x.astype(d)) for x, d in zip(treedef.flatten_up_to(v), dtypes)]
        result = [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in wired]
        p = [_to_wire(leaf) for leaf in leaves]
        out = jax.pure_callback(host, result, p, wired, vmap_method="expand_dims")
        return jax.tree.unflatten(treedef, [_from_wire_traced(o, d) for o, d in zip(out, dtypes)])

    return matvec


def _host_products(owner: Any, leaves, vs, treedef, shapes, products: Callable) -> list:
    """The host side of a product called back from a compiled tool.

    ``leaves`` are the params' leaves and ``vs`` the vectors' (``(*lead, *shape)``
    each, the leading axes those of ``vmap``, of size 1 on an unbatched leaf);
    ``products(params, vectors)`` gets them as pytrees, the vectors stacked on one
    leading axis, and returns the stacked products, or None for NaN vectors. An
    error gives NaN vectors too and is kept in ``owner._error``, for the tool to
    raise when it returns (an exception cannot cross the callback).
    """
    lead = np.broadcast_shapes(*(np.shape(v)[: np.ndim(v) - len(s)] for v, s in zip(vs, shapes)))
    vs = [np.broadcast_to(v, (*lead, *s)) for v, s in zip(vs, shapes)]
    stacks = [jnp.asarray(np.reshape(v, (-1, *s))) for v, s in zip(vs, shapes)]
    try:  # vmap added leading axes of size 1 to the params
        params = [jnp.asarray(np.reshape(leaf, s)) for leaf, s in zip(leaves, shapes)]
        out = products(jax.tree.unflatten(treedef, params), jax.tree.unflatten(treedef, stacks))
    except Exception as error:  # noqa: BLE001  (re-raised by the tool, outside the callback)
        owner._error, out = error, None
    if out is None:
        return [np.full(v.shape, np.nan, v.dtype) for v in vs]
    out = jax.tree.leaves(out)
    return [np.asarray(o).astype(v.dtype).reshape(v.shape) for o, v in zip(out, vs)]


def _to_wire(x: jax.Array) -> jax.Array:
    """64-bit floats cross the callback as ``uint32`` pairs: the callback's thread may not
    have the caller's ``jax.enable_x64`` context, and JAX would round them to 32 bits."""
    return jax.lax.bitcast_convert_type(x, jnp.uint32) if x.dtype.itemsize == 8 else x


def _from_wire_traced(x: jax.Array, dtype: Any) -> jax.Array:
    return jax.lax.bitcast_convert_type(x, dtype) if np.dtype(dtype).itemsize == 8 else x


def _from_wire(x: Any, dtype: Any) -> np.ndarray:
    x = np.asarray(x)
    if np.dtype(dtype).itemsize == 8:
        return np.ascontiguousarray(x).view(dtype)[..., 0]
    return x


def _to_wire_host(x: np.ndarray) -> np.ndarray:
    if x.dtype.itemsize == 8:
        return np.ascontiguousarray(x).view(np.uint32).reshape(*x.shape, 2)
    return x


def _check_nested_products(params: Any) -> None:
    """Raises where a streamed tool would deadlock: JAX's CPU backend with a one-thread pool.

    The compiled tool holds one of XLA's CPU threads in its product's callback,
    and the per-batch programs the callback runs wait for another: with one
    thread, forever (whether or not ``jax_cpu_enable_async_dispatch`` is set;
    small programs, run inline, may escape, a network's do not).
    """
    if _cpu_threads() > 1 or {_platform(leaf) for leaf in jax.tree.leaves(params)} - {"cpu"}:
        return
    checks.fail(
        "the threads of XLA's CPU pool that a streamed objective's tools run on",
        "at least 2 (the compiled tool and its products' per-batch programs would wait for "
        "each other on one thread); set the environment variable NPROC to the CPUs plus one "
        "(e.g. NPROC=2) before JAX starts, use more CPUs, or use a stacked source (arrays "
        "with a leading batch axis, no callback)",
        f"{_cpu_threads()} thread on {_cpus()} CPU",
        RuntimeError,
    )


def _platform(leaf: Any) -> str:
    """Where a leaf lives: its devices' platform, JAX's default for a tracer or NumPy array."""
    if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
        return next(iter(leaf.devices())).platform
    return jax.default_backend()


def _cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cpu_threads() -> int:
    """The size of XLA's CPU thread pool: ``NPROC`` when it is a whole number, else the CPUs
    (XLA reads ``NPROC`` when JAX starts its CPU backend)."""
    value = os.environ.get("NPROC", "").strip()
    return max(int(value), 0) if value.isdigit() else _cpus()


class _ActiveStream:
    """Stands for the streamed objective being run (:meth:`DatasetObjective.run`), so
    that one compiled solver serves all of them: its callback asks for it."""

    objective: Any = None

    def _tree_operator_at(self, params: Any) -> Callable[[Any], Any]:
        return _streamed_matvec(lambda: self.objective, params)


_STREAM = _ActiveStream()


@contextlib.contextmanager
def _streaming(objective: Any) -> Iterator[None]:
    """Makes ``objective`` the one whose ``_host_matvec`` the compiled tools call back."""
    previous, _STREAM.objective = _STREAM.objective, objective
    try:
        yield
    finally:
        _STREAM.objective = previous


def _describe(batch: Any) -> str:
    """Shapes and dtypes of a batch's leaves, for messages."""
    shapes = jax.tree.map(lambda leaf: f"{np.result_type(leaf)}{list(np.shape(leaf))}", batch)
    return str(shapes)


def _accumulation_dtype(dtype: Any) -> Any:
    """float64 when ``jax_enable_x64`` is set, else the products' own dtype."""
    return jnp.dtype(jnp.float64) if _x64() else jnp.dtype(dtype)


def _work(x: Any) -> Any:
    """The accumulation dtype of an array's products."""
    return _accumulation_dtype(jnp.result_type(x))


def _x64() -> bool:
    """Whether 64-bit types are enabled here (globally or by ``jax.enable_x64``)."""
    return bool(jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.float64)


def _accumulate(acc, out, weight, index, bad):
    """``acc + weight * out`` leaf by leaf; ``bad`` becomes ``index`` at the first non-finite."""
    bad = jnp.where((bad < 0) & ~V.finite(out), index, bad)
    return jax.tree.map(lambda a, o: a + weight * o.astype(a.dtype), acc, out), bad


@functools.partial(jax.jit, static_argnums=0)
def _product_step(obj, params, batch, vectors, acc, weight, index, bad):
    """``acc + N_b [M_b v for v in vectors]``: one batch's products, linearised once."""
    out = jax.vmap(obj.batch_product(params, batch))(vectors)
    return _accumulate(acc, out, weight, index, bad)


@functools.partial(jax.jit, static_argnums=0)
def _value_step(obj, params, batch, vectors, acc, weight, index, bad):
    return _accumulate(acc, obj.batch_loss(params, batch), weight, index, bad)


@functools.partial(jax.jit, static_argnums=0)
def _grad_step(obj, params, batch, vectors, acc, weight, index, bad):
    return _accumulate(acc, jax.grad(obj.batch_loss)(params, batch), weight, index, bad)


def _stacked_mean(obj: DatasetObjective, params: Any, fn: Callable, blame: Any = True):
    """The mean of ``fn(params, batch)`` (a pytree) over the stacked batches: one
    ``lax.scan`` holding the batch in flight and the sum (float64 with x64); the first
    non-finite batch (if ``blame``: a finite vector's) goes to the host."""
    batches = obj._batches
    count = int(np.shape(jax.tree.leaves(batches)[0])[0])
    out = jax.eval_shape(fn, params, jax.tree.map(lambda b: b[0], batches))
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, _work(s)), out)

    def step(carry, batch_index):
        (acc, bad), (batch, index) = carry, batch_index
        return _accumulate(acc, fn(params, batch), 1.0, index, bad), None

    start = (init, jnp.asarray(-1, jnp.int32))
    (acc, bad), _ = jax.lax.scan(step, start, (batches, jnp.arange(count, dtype=jnp.int32)))
    jax.debug.callback(obj._note_nonfinite, jnp.where(blame, bad, -1))
    return jax.tree.map(lambda a: a / count, acc)


def _stacked_matvec(obj: DatasetObjective, params: Any, v: Any) -> Any:
    def product(p, batch):
        return obj.batch_product(p, batch)(v)

    blame = V.finite(v)  # a NaN vector is no batch's fault
    return V.cast_like(_stacked_mean(obj, params, product, blame), v)


def _is_stacked(batches: Any) -> bool:
    """Arrays, tuples, dicts (pytrees) are stacked; lists, loaders, callables stream."""
    if callable(batches) or isinstance(batches, list):
        return False
    if isinstance(batches, (tuple, Mapping)) or hasattr(batches, "shape"):
        return True
    return not hasattr(batches, "__iter__")


def _check_source(batches: Any) -> None:
    """Raises for a one-shot iterator, a non-iterable, or a source that yields nothing."""
    if callable(batches):
        it = batches()
        if not hasattr(it, "__next__") and not hasattr(it, "__iter__"):
            checks.fail("batches()", "an iterator over batches", it, TypeError)
    else:
        if not hasattr(batches, "__iter__"):
            what = "a list of batches, a re-iterable loader or a callable returning an iterator"
            checks.fail("batches", what, batches, TypeError)
        if iter(batches) is batches:
            what = "re-iterable (a list, a loader, or a callable returning a fresh iterator)"
            checks.fail("batches", what + ": every product makes one pass", "a one-shot iterator")
        it = batches
    if next(iter(it), _EMPTY) is _EMPTY:
        checks.fail("batches", "a source that yields at least one batch", "an empty source")


_EMPTY = object()


def dataset_mean(
    loss: Any,
    batches: Any,
    *,
    model: Callable[[Any, Any], Any] | None = None,
    curvature: str = "hessian",
    likelihood: str | None = None,
    progress: bool = False,
) -> DatasetObjective:
    """The mean of a loss over a data set of batches, and which curvature of it to analyse.

    ``F(params) = sum_b N_b L_b(params) / sum_b N_b`` with ``N_b`` the leading
    axis of batch ``b`` and ``L_b`` its loss (a mean over its examples), so
    unequal batches (a smaller last one) are weighted by their size. Every
    product ``M v`` is the same weighted mean of per-batch products.

    Args:
        loss: without ``model``, ``loss(params, batch) -> scalar``; with
            ``model``, ``loss(outputs, y) -> scalar`` on a batch ``(x, y)``, or
            the name ``"softmax_cross_entropy"`` or ``"squared_error"``
            (:func:`softmax_cross_entropy`, :func:`squared_error`).
        batches: a list of batches, a re-iterable loader, or a zero-argument
            callable returning a fresh iterator (streamed, one pass per
            product); or a pytree of arrays whose leaves share a leading axis
            of equal batches (stacked, one compiled scan). Batches are pytrees
            of arrays sharing a leading example axis; with ``model``, ``(x, y)``.
        model: ``model(params, x) -> outputs``, needed for every curvature but
            ``"hessian"``.
        curvature: ``"hessian"``; or, with ``model``: ``"ggn"`` (``J^T H_L J``),
            ``"fisher"`` (``J^T F_out J``, the model's predictive distribution's
            Fisher) or ``"empirical_fisher"`` (``(1/N) sum_i g_i g_i^T``); see
            :mod:`gradxform.curvature`.
        likelihood: for ``"fisher"``: ``"categorical"`` or ``"gaussian"``;
            implied by a named loss.
        progress: True for a progress line of each streamed pass on stderr
            (``pass P  batch i/N  E examples  T s``, rewritten in place, at most
            twice a second); a stacked source (one compiled scan) reports none.

    Returns:
        A :class:`DatasetObjective` for every spectral tool in :mod:`gradxform.hessian`.

    Raises:
        ValueError: for an empty source, a one-shot iterator, an unknown
            curvature, or a curvature that needs ``model`` without one.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp, numpy as np
        >>> batches = [np.array([[1.0], [1.0]]), np.array([[4.0]])]  # 3 examples
        >>> objective = gx.hessian.dataset_mean(lambda w, b: jnp.mean(b[:, 0] * w**2), batches)
        >>> round(float(gx.hessian.trace(objective, jnp.ones(1), num_matvecs=3).estimate), 6)
        4.0
    """
    checks.choice("curvature", curvature, CURVATURES)
    if model is None and curvature != "hessian":
        checks.fail("model", f"given for curvature={curvature!r}", None)
    if model is not None:
        checks.callable_arg("model", model, "model(params, x) -> outputs")
    if isinstance(loss, str):
        checks.choice("loss", loss, _NAMED_LOSSES)
        if model is None:
            checks.fail("loss", "a callable loss(params, batch) without model", loss)
        loss, implied = _NAMED_LOSSES[loss]
        likelihood = implied if likelihood is None else likelihood
    checks.callable_arg("loss", loss, "a loss function")
    if curvature == "fisher":
        if likelihood is None:
            checks.fail("likelihood", "'categorical' or 'gaussian' for curvature='fisher'", None)
        checks.choice("likelihood", likelihood, ("categorical", "gaussian"))
    reporter = ProgressLine() if checks.boolean("progress", progress) else None
    stacked = _is_stacked(batches)
    if stacked:
        leaves = jax.tree.leaves(batches)
        if not leaves or len({np.shape(leaf)[0] if np.ndim(leaf) else -1 for leaf in leaves}) != 1:
            checks.fail("batches", "stacked arrays sharing a leading axis of batches", batches)
    else:
        _check_source(batches)
    return DatasetObjective(loss, batches, model, curvature, likelihood, stacked, reporter)
