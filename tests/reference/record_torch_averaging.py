"""Records torch's ``swa_utils.AveragedModel`` (SWA and EMA) on a tiny linear model.

Run from the repository root (needs torch):
``python tests/reference/record_torch_averaging.py``. Writes
``tests/reference/torch_averaging.npz``, which ``tests/test_averaging.py`` reads,
so that CI needs no torch.

A ``torch.nn.Linear(4, 3)`` (float32) is trained by ``torch.optim.SGD`` with
momentum for ``STEPS`` steps on gradients fixed in advance (stored in the file
as ``grads/<leaf>``, shape ``(STEPS, *shape)``: the gradient of step ``t`` is
``grads/<leaf>[t]``, whatever the parameters are). After optimizer step ``t``
(``t = 1, 2, ...``) each averaged model is updated when its rule says so:

* ``swa_<start>_<every>``: ``AveragedModel(model)`` (the default, uniform
  average), updated when ``t >= start`` and ``(t - start) % every == 0``;
* ``ema``: ``AveragedModel(model, avg_fn=get_ema_avg_fn(DECAY))``, every step;
* ``ema_multi``: ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY))``
  (``torch._foreach_lerp_``), every step.

Stored per step ``t`` (row ``t - 1``): ``params/<leaf>`` (the model after step
``t``), ``<name>/<leaf>`` (the averaged model after step ``t``'s update) and
``<name>/n_averaged``.
"""

from __future__ import annotations

import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
STEPS = 400
LR, MOMENTUM = 0.05, 0.9
DECAY = 0.99
SWA_RULES = ((100, 5), (0, 1), (7, 3))  # (start, every)
SHAPES = {"weight": (3, 4), "bias": (3,)}


def fixed_gradients(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((STEPS, *s)).astype(np.float32) for k, s in SHAPES.items()}


def record() -> dict[str, np.ndarray]:
    import torch
    from torch.optim import swa_utils

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    grads = fixed_gradients()
    averaged = {f"swa_{s}_{e}": (swa_utils.AveragedModel(model), s, e) for s, e in SWA_RULES}
    averaged["ema"] = (
        swa_utils.AveragedModel(model, avg_fn=swa_utils.get_ema_avg_fn(DECAY)),
        0,
        1,
    )
    averaged["ema_multi"] = (
        swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(DECAY)),
        0,
        1,
    )
    out: dict[str, list] = {}

    def keep(key, value):
        out.setdefault(key, []).append(np.array(value, copy=True))

    initial = {k: p.detach().numpy().copy() for k, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for t in range(1, STEPS + 1):
        for k, p in model.named_parameters():
            p.grad = torch.from_numpy(grads[k][t - 1].copy())
        opt.step()
        for k, p in model.named_parameters():
            keep(f"params/{k}", p.detach().numpy())
        for name, (avg, start, every) in averaged.items():
            if t >= start and (t - start) % every == 0:
                avg.update_parameters(model)
            for k, p in avg.module.named_parameters():
                keep(f"{name}/{k}", p.detach().numpy())
            keep(f"{name}/n_averaged", avg.n_averaged.item())
    result = {k: np.stack(v) for k, v in out.items()}
    result.update({f"grads/{k}": v for k, v in grads.items()})
    result.update({f"initial/{k}": v for k, v in initial.items()})
    result["torch_version"] = np.array(torch.__version__)
    return result


def main() -> None:
    result = record()
    path = HERE / "torch_averaging.npz"
    np.savez_compressed(path, **result)
    print(f"wrote {len(result) - 1} arrays to {path} (torch {result['torch_version']})")


if __name__ == "__main__":
    main()
