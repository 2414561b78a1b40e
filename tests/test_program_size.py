"""Each optimizer's per-leaf program is no larger than optax's counterpart.

Oracle: optax's program for the same optimizer, lowered and compiled by the
same JAX and XLA. A step's cost on many-leaf models is its per-leaf program
(XLA:CPU compiles, and launches, its kernels once per leaf), so the count that
matters is what one more leaf adds:

    per_leaf = (ops(tree of 3 leaves) - ops(tree of 1 leaf)) / 2

with float32 leaves of three distinct shapes, so that no op serves two
leaves, for every optimizer both libraries have: the rows of
``tests/test_optax_parity.py``, with its hyperparameters. Two programs are
counted, each over every function or computation in the module (fused
computations included):

* the lowered StableHLO (``jit(update).lower(...).as_text()``): every
  operation with a result (``stablehlo.*``, ``func.call``), constants
  included; this is the program gradxform writes, before XLA rewrites it.
  gradxform's is no larger than optax's, for every optimizer both have.
* the compiled HLO (``.compile().as_text()``): every instruction except
  ``parameter`` and ``constant``. A ``parameter`` of a fused computation
  repeats one of the fusion's operands, and a ``constant`` is optax's form of
  the same operand: optax bakes its hyperparameters into the program as
  literals where gradxform reads them from the state (as ``parameter``), so
  that changing one does not recompile. Counting either would count that
  design choice; the instructions that compute on arrays (arithmetic,
  compares, selects, broadcasts, fusions, copies) are counted. Here XLA folds
  what a literal allows and a runtime value does not, so gradxform's count
  may exceed optax's by the itemized price of its guarantees (``PRICE``) and
  by nothing else.

Scalar instructions (rank 0) are not counted: outside the kernels they run
once per step (the count, schedules, bias corrections ``1 - b**t``), and
inside a kernel they do not depend on the element, so the compiled loop
computes them once (the stored ``1 - decay`` check, a ``where`` of scalars,
is fused into each kernel that reads it). What a kernel's scalar work can
cost is the schedule instead: :func:`test_each_gradient_leaf_is_read_by_adjacent_kernels`.
"""

import re
from collections import Counter

import jax
import jax.numpy as jnp
import optax
import pytest

import gradxform as gx
from tests.test_optax_parity import ROWS as PAIRS

SHAPES = [(3, 4), (5,), (2, 3, 2)]  # distinct: no op of one leaf serves another

# What gradxform's compiled leaf may add to optax's, each the price of a guarantee:
SIGN = 1  # -learning_rate, a runtime scalar, negated in each kernel (optax's is a literal)
GUARD = 3  # divide's zero denominator gives 0, not NaN: a broadcast 0, a compare, a select
EPS_ROOT = 2  # eps_root, a runtime scalar, added inside the root (optax folds its literal 0.0)
CLIP = 1 + 2  # -max_delta negated in each kernel; a runtime max_norm (optax folds its 1.0)
PRICE = {  # every row of tests/test_optax_parity.py: the optimizers both libraries have
    "sgd": SIGN,
    "sgd_momentum": SIGN,
    "sgd_nesterov": SIGN,
    "adagrad": SIGN,  # optax's AdaGrad guards its zero too
    "rmsprop": SIGN + GUARD,
    "rmsprop_centered_momentum": SIGN + GUARD,
    "rmsprop_eps_outside": SIGN + GUARD,
    "adam": SIGN + GUARD + EPS_ROOT,
    "adam_eps_root": SIGN + GUARD,
    "adam_scheduled_lr": SIGN + GUARD + EPS_ROOT,
    "adamw": SIGN + GUARD + EPS_ROOT,
    "adamw_masked": SIGN + GUARD + EPS_ROOT,
    "amsgrad": SIGN + GUARD + EPS_ROOT,
    "nadam": SIGN + GUARD + EPS_ROOT,
    "clip_then_sgd": SIGN + CLIP,
}

_LOWERED_OP = re.compile(r"^\s*%[^=]*=\s*\"?([a-z_]+\.[a-z_]+|call)\b", re.MULTILINE)
_HLO_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%\S+\s*=\s*(\S+).*?\s([a-z][a-z0-9\-]*)\(", re.MULTILINE
)
_SCALAR = re.compile(r"^[a-z0-9]+\[\]$")
_WIRING = {"parameter", "constant"}


def lowered_ops(text):
    """Operation name -> how many, over every function of a lowered StableHLO module."""
    return Counter(_LOWERED_OP.findall(text))


def compiled_ops(text):
    """Opcode -> how many, over every computation of a compiled HLO module: the
    instructions on arrays, wiring left out."""
    found = _HLO_INSTRUCTION.findall(text)
    return Counter(op for shape, op in found if op not in _WIRING and not _SCALAR.match(shape))


def programs(tx, n, stage):
    """The lowered text of ``tx.update`` on a tree of the first ``n`` SHAPES, and the
    compiled text when ``stage == "compiled"`` (else "")."""
    params = {f"w{i}": jnp.ones(shape, jnp.float32) for i, shape in enumerate(SHAPES[:n])}
    state = tx.init(params)
    lowered = jax.jit(tx.update).lower(params, state, params)
    return lowered.as_text(), lowered.compile().as_text() if stage == "compiled" else ""


def per_leaf(tx, stage="lowered"):
    """``(lowered, compiled)``: Counters of what one more leaf adds (ops per leaf); the
    compiled one is empty unless ``stage == "compiled"``."""
    (low1, comp1), (low3, comp3) = programs(tx, 1, stage), programs(tx, len(SHAPES), stage)
    out = []
    for count, one, three in ((lowered_ops, low1, low3), (compiled_ops, comp1, comp3)):
        a, b = count(one), count(three)
        out.append(Counter({op: (b[op] - a[op]) / (len(SHAPES) - 1) for op in a | b}))
    return tuple(out)


def sizes(stage):
    """name -> (gradxform's, optax's) per-leaf Counter at ``stage``, for every pair."""
    index = ["lowered", "compiled"].index(stage)
    return {
        name: (per_leaf(ours(), stage)[index], per_leaf(theirs(), stage)[index])
        for name, (ours, theirs) in PAIRS.items()
    }


@pytest.fixture(scope="module")
def lowered():
    return sizes("lowered")


@pytest.fixture(scope="module")
def compiled():
    return sizes("compiled")


def differences(ours, theirs):
    return {op: (ours[op], theirs[op]) for op in sorted(ours | theirs) if ours[op] != theirs[op]}


def test_the_counters_read_both_programs():
    """The counts are of real ops: Adam's leaf has its sqrt, its divides and its kernels."""
    lowered_ops_, compiled_ops_ = per_leaf(optax.adam(0.1), "compiled")
    assert lowered_ops_["stablehlo.sqrt"] == 1 and lowered_ops_["stablehlo.divide"] >= 1
    assert compiled_ops_["sqrt"] == 1 and compiled_ops_["fusion"] >= 1
    assert sum(compiled_ops_.values()) > 10 and "parameter" not in compiled_ops_


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_lowered_leaf_is_no_larger_than_optax(lowered, name):
    """For every optimizer optax also has, with the same hyperparameters."""
    ours, theirs = lowered[name]
    assert sum(ours.values()) <= sum(theirs.values()), differences(ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_compiled_leaf_exceeds_optax_by_its_price_only(compiled, name):
    assert name in PRICE, f"{name}: a row of test_optax_parity.py with no PRICE here: add one"
    ours, theirs = compiled[name]
    assert sum(ours.values()) <= sum(theirs.values()) + PRICE[name], differences(ours, theirs)


def distinct_fused_computations(text):
    """How many fused computations differ once names and metadata are left out."""
    bodies = set()
    for computation in re.split(r"\n(?=%fused_computation)", text.split("ENTRY")[0]):
        if computation.startswith("%fused"):
            body = re.sub(r"metadata=\{[^}]*\}", "", computation.split("{", 1)[1])
            bodies.add(re.sub(r"%[\w.\-]+", "%x", body))
    return len(bodies)


def test_equal_shaped_leaves_share_their_kernels():
    """Each leaf's kernels are those of any other leaf of its shape (XLA compiles them once):
    4 equal leaves have no more distinct fused computations than 2, as for optax."""

    def distinct(tx, n):
        params = {f"w{i}": jnp.ones((4, 3), jnp.float32) for i in range(n)}
        state = tx.init(params)
        compiled = jax.jit(tx.update).lower(params, state, params).compile()
        return distinct_fused_computations(compiled.as_text())

    for tx in (gx.adamw(0.1), gx.sgd(0.1, 0.9, nesterov=True)):
        assert distinct(tx, 4) == distinct(tx, 2) > 0
    assert distinct(optax.adamw(0.1), 4) == distinct(optax.adamw(0.1), 2)


def gradient_read_spans(tx):
    """For each gradient leaf, how far apart the first and the last instruction reading it
    are in the compiled schedule of a training step (``tx.update``, the updates applied,
    params and state donated) on the SHAPES tree.

    A leaf read by two kernels run one after the other is still in cache for the
    second; read at opposite ends of the step, it is fetched from memory twice.
    """
    params = {f"w{i}": jnp.ones(shape, jnp.float32) for i, shape in enumerate(SHAPES)}

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), params)
    text = compiled.compile().as_text()
    reads: dict[str, list[int]] = {}
    for i, line in enumerate(text[text.index("ENTRY") :].splitlines()[1:]):
        for leaf in set(re.findall(r"%grads__(w\d)__\.\d+\b", line.split("=", 1)[-1])):
            reads.setdefault(leaf, []).append(i)
    return {leaf: max(at) - min(at) for leaf, at in reads.items()}


@pytest.mark.parametrize("name", ["adam", "adamw", "nadam", "rmsprop", "amsgrad"])
def test_each_gradient_leaf_is_read_by_adjacent_kernels(name):
    """XLA schedules gradxform's training step as it schedules optax's: the kernels
    reading a gradient leaf are no further apart than optax's.

    A ``lax.cond`` computing a decay's complement once per step (earlier versions, on
    CPU) made the scheduler run every leaf's second-moment kernel, then every leaf's
    first-moment one (spans of 3 against optax's 1 here): on the GPT tree Adam's step
    was 7-11% slower than optax's.
    """
    ours, theirs = (gradient_read_spans(make()) for make in PAIRS[name])
    assert set(ours) == set(theirs) == {"w0", "w1", "w2"}
    assert all(ours[leaf] <= theirs[leaf] for leaf in ours), (ours, theirs)
