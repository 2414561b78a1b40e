"""The spectral tools on the 8-device CPU mesh (issue #19, "Many devices").

The device count is fixed when jax starts, so :func:`sharded_hessian_report` runs
in the session's one 8-device interpreter (tests/helpers.py's ``sharded_report``)
and the tests read its report. A small MLP in float64, its params FSDP-sharded
(every leaf on its first axis) or replicated with the examples sharded (data
parallel). The oracle is the same computation on one device: the top eigenvalues,
the Hutch++ trace and the SLQ density must agree to 1e-12 relative. The compiled
Lanczos program is read for its collectives (all-reduces of inner products, no
all-gather of a basis-sized array), its basis leaves for their sharding, and
its memory analysis for the bytes per device.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.helpers import sharded_report

SHAPES = {"w1": (16, 24), "b1": (24,), "w2": (24, 8), "b2": (8,)}  # n = 608
EXAMPLES = 64
STEPS = 80  # the Lanczos budget: the basis is STEPS x n
SHAPE = re.compile(r"\b[a-z]+\d*\[([\d,]*)\]")


def _problem():
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=s) / np.sqrt(s[0]) for k, s in SHAPES.items()}
    return params, rng.normal(size=(EXAMPLES, 16)), rng.normal(size=(EXAMPLES, 8))


def _collectives(hlo: str, name: str) -> list[list[int]]:
    """The result shapes of every ``name`` instruction (``all-gather``, ...) in HLO text."""
    found = []
    for line in hlo.splitlines():
        head = line.split(f" {name}(", 1)
        if len(head) == 2 or f" {name}-start(" in line:
            lhs = line.split(f" {name}", 1)[0].split("=", 1)[-1]
            found += [[int(d) for d in m.split(",") if d] for m in SHAPE.findall(lhs)]
    return found


def _loss(jnp, p, x, y):
    hidden = jnp.tanh(x @ p["w1"] + p["b1"])
    return 0.5 * jnp.mean(jnp.sum((hidden @ p["w2"] + p["b2"] - y) ** 2, axis=1))


def _tools(gx, jnp, params, x, y, key, which):
    """The three tools, with the batch an argument (as jitted here): a sharded batch stays
    sharded, where a batch closed over by ``f`` would be a constant of the program."""

    def f(p):
        return _loss(jnp, p, x, y)

    if which == "eigenpairs":
        return gx.hessian.hessian_eigenpairs(f, params, k=3, tol=1e-10, max_matvecs=STEPS, key=key)
    trace = gx.hessian.trace(f, params, num_matvecs=30, key=key)
    return trace, gx.hessian.spectral_density(f, params, num_probes=2, steps=20, key=key)


def sharded_hessian_report() -> dict:
    """Runs in the 8-device interpreter: every case's answers, shardings, HLO and memory."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import gradxform as gx

    with jax.enable_x64(True):
        devices = np.array(jax.devices())
        assert devices.size == 8, devices
        mesh = Mesh(devices, ("d",))
        host, x, y = _problem()
        key = jax.random.PRNGKey(1)
        fsdp = {k: NamedSharding(mesh, PartitionSpec("d")) for k in SHAPES}
        replicated, rows = (
            NamedSharding(mesh, PartitionSpec()),
            NamedSharding(mesh, PartitionSpec("d")),
        )
        cases = {
            "single": (jax.device_put(host, devices[0]), jax.device_put((x, y), devices[0])),
            "fsdp": (jax.device_put(host, fsdp), jax.device_put((x, y), replicated)),
            "data_parallel": (jax.device_put(host, replicated), jax.device_put((x, y), rows)),
            "both": (jax.device_put(host, fsdp), jax.device_put((x, y), rows)),
        }
        estimates = jax.jit(lambda p, x, y, key: _tools(gx, jnp, p, x, y, key, "estimates"))
        eigenpairs = jax.jit(lambda p, x, y, key: _tools(gx, jnp, p, x, y, key, "eigenpairs"))
        report: dict = {}
        for name, (params, (xs, ys)) in cases.items():
            compiled = eigenpairs.lower(params, xs, ys, key).compile()  # compiled once, read, run
            hlo, memory = compiled.as_text(), compiled.memory_analysis()
            pairs, (trace, density) = compiled(params, xs, ys, key), estimates(params, xs, ys, key)
            v0 = jax.tree.map(jnp.ones_like, params)
            matvec = gx.curvature.linearized_hvp(lambda p, x=xs, y=ys: _loss(jnp, p, x, y), params)
            basis = gx.hessian.lanczos(matvec, v0, 16).basis
            report[name] = {
                "values": np.asarray(pairs.values).tolist(),
                "converged": bool(np.all(pairs.converged)),
                "num_matvecs": int(pairs.num_matvecs),
                "trace": float(trace.estimate),
                "nodes": np.asarray(density.nodes).tolist(),
                "weights": np.asarray(density.weights).tolist(),
                "temp_bytes": int(memory.temp_size_in_bytes) if memory is not None else -1,
                "all_gathers": _collectives(hlo, "all-gather"),
                "all_reduces": _collectives(hlo, "all-reduce"),
                "basis_shard_shapes": {
                    k: list(leaf.addressable_shards[0].data.shape) for k, leaf in basis.items()
                },
                "basis_specs": {
                    k: str(getattr(leaf.sharding, "spec", None)) for k, leaf in basis.items()
                },
            }
        return report


@pytest.fixture(scope="module")
def report():
    return sharded_report("tests.test_hessian_sharding:sharded_hessian_report")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["fsdp", "data_parallel", "both"])
def test_many_devices_give_the_single_device_answer(report, case):
    single, sharded = report["single"], report[case]
    assert single["converged"] and sharded["converged"]
    for field in ("values", "trace", "nodes", "weights"):
        np.testing.assert_allclose(sharded[field], single[field], rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_fsdp_basis_is_sharded_like_the_params(report):
    for name, shape in SHAPES.items():
        assert report["fsdp"]["basis_specs"][name] == "P(None, 'd')", name
        assert report["fsdp"]["basis_shard_shapes"][name] == [16, shape[0] // 8, *shape[1:]]
        assert report["single"]["basis_shard_shapes"][name] == [16, *shape]
    # the whole program's scratch per device: the STEPS x n basis dominates it
    ratio = report["fsdp"]["temp_bytes"] / report["single"]["temp_bytes"]
    assert ratio < 0.25, ratio


@pytest.mark.slow
def test_lanczos_loop_gathers_no_basis_vector(report):
    fsdp = report["fsdp"]
    assert fsdp["all_reduces"], "the inner products are all-reduced"
    assert report["single"]["all_gathers"] == [] == report["single"]["all_reduces"]
    # a basis window of a matrix leaf has its shape behind a row axis; and every gather is
    # smaller than the smallest window (16 rows) of the largest leaf: activations only
    matrices = [list(s) for s in SHAPES.values() if len(s) == 2]
    assert not [s for s in fsdp["all_gathers"] if s[-2:] in matrices and len(s) > 2]
    largest = max(int(np.prod(s)) for s in SHAPES.values())
    sizes = [int(np.prod(s)) for s in fsdp["all_gathers"]]
    assert max(sizes, default=0) < 16 * largest, fsdp["all_gathers"]
