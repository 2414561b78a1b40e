"""Records pytorch-optimizer's SOAP and Shampoo, for tests/test_kronecker.py.

Run from the repository root (needs torch and ``pytorch-optimizer`` 4.1):
``PYTHONPATH=<pytorch-optimizer>:<torch> python tests/reference/record_torch_kronecker.py``.
Writes ``tests/reference/torch_kronecker.npz``: for each config ``<c>`` and leaf
``<k>``, ``<c>/<k>`` (steps + 1, *shape), the float32 params before the first step
and after each. The gradient torch is given at step ``t`` is
``2 * scale * (p - target) + noise[t]`` from :func:`problem`, which a test
recomputes in NumPy from the recorded params (elementwise float32 operations,
the same bits: checked here). pytorch-optimizer's SOAP is the paper's reference
code (nikhilvyas/SOAP); the batched leaf ``k`` (3, 4, 4) is given to torch as
three 2-D parameters ``k0``, ``k1``, ``k2``.
"""

from __future__ import annotations

import pathlib

import numpy as np

STEPS = 100
SHAPES = {"w1": (5, 5), "w2": (12, 4), "k": (3, 4, 4), "b": (5,)}
CONFIGS = {
    "soap_default": (
        "SOAP",
        {
            "lr": 0.01,
            "betas": (0.95, 0.95),
            "weight_decay": 0.0,
            "precondition_frequency": 10,
            "max_precondition_dim": 10,  # w2's 12 rows are not factored
        },
    ),
    "soap_frequent": (
        "SOAP",
        {
            "lr": 0.02,
            "betas": (0.9, 0.99),
            "shampoo_beta": 0.8,
            "eps": 1e-6,
            "weight_decay": 0.0,
            "precondition_frequency": 3,
            "max_precondition_dim": 10,
        },
    ),
    "shampoo": (
        "Shampoo",
        {"lr": 0.01, "momentum": 0.0, "preconditioning_compute_steps": 1, "matrix_eps": 1e-6},
    ),
}
MATRICES_ONLY = {"shampoo"}  # its 1-D rule is a full d x d factor, not gradxform's diagonal


def problem():
    """Initial params, targets, curvature scales and per-step noise (float32)."""
    rng = np.random.default_rng(1806)
    out = {}
    for k, shape in SHAPES.items():
        out[k] = (
            rng.standard_normal(shape).astype(np.float32),
            rng.standard_normal(shape).astype(np.float32),
            rng.uniform(0.5, 2.0, shape).astype(np.float32),
            (0.1 * rng.standard_normal((STEPS, *shape))).astype(np.float32),
        )
    return out


def gradient(p, data, t):
    """The gradient at step ``t`` in NumPy float32 (torch computes the same bits)."""
    _, target, scale, noise = data
    return np.float32(2) * scale * (p - target) + noise[t]


def record(name: str, cls: str, config: dict) -> dict:
    import pytorch_optimizer
    import torch

    data = problem()
    keys = [k for k in SHAPES if not (name in MATRICES_ONLY and len(SHAPES[k]) < 2)]
    params = {}  # torch's parameters: the batched leaf as separate matrices
    for k in keys:
        if len(SHAPES[k]) == 3:
            params.update({f"{k}{i}": torch.tensor(m) for i, m in enumerate(data[k][0])})
        else:
            params[k] = torch.tensor(data[k][0])
    opt = getattr(pytorch_optimizer, cls)(list(params.values()), **config)

    def leaves():
        out = {k: params[k].detach().clone().numpy() for k in keys if k in params}
        for k in keys:
            if len(SHAPES[k]) == 3:
                out[k] = np.stack([params[f"{k}{i}"].detach().numpy() for i in range(SHAPES[k][0])])
        return out

    history = {k: [v] for k, v in leaves().items()}
    for t in range(STEPS):
        now = leaves()
        with torch.no_grad():
            for k in keys:
                target, scale, noise = (torch.tensor(a) for a in data[k][1:])
                if len(SHAPES[k]) == 3:
                    for i in range(SHAPES[k][0]):
                        p = params[f"{k}{i}"]
                        p.grad = 2 * scale[i] * (p - target[i]) + noise[t, i]
                    torch_grad = np.stack(
                        [params[f"{k}{i}"].grad.numpy() for i in range(SHAPES[k][0])]
                    )
                else:
                    p = params[k]
                    p.grad = 2 * scale * (p - target) + noise[t]
                    torch_grad = p.grad.numpy().copy()
                assert np.array_equal(torch_grad, gradient(now[k], data[k], t)), (name, k, t)
        opt.step()
        for k, v in leaves().items():
            history[k].append(v)
    return {k: np.stack(v) for k, v in history.items()}


def main() -> None:
    from importlib.metadata import version

    import torch

    arrays = {
        "torch_version": np.array(torch.__version__),
        "pytorch_optimizer_version": np.array(version("pytorch-optimizer")),
    }
    for name, (cls, config) in CONFIGS.items():
        for key, value in record(name, cls, config).items():
            arrays[f"{name}/{key}"] = value
    path = pathlib.Path(__file__).resolve().parent / "torch_kronecker.npz"
    np.savez_compressed(path, **arrays)
    print(
        "wrote", path, "torch", torch.__version__, "pytorch-optimizer", version("pytorch-optimizer")
    )


if __name__ == "__main__":
    main()
