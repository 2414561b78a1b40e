#!/usr/bin/env bash
# Every GPU check of a device session, in one command (the device tool's machine has
# jax with CUDA, optax, torch; nothing is installed from the network). Stages by name:
#   bash benchmarks/gpu_checks.sh env smoke update_step       # first call
#   bash benchmarks/gpu_checks.sh floor train                  # second call: step floor, train.py
#   bash benchmarks/gpu_checks.sh gpt_step                     # the GPT tree's step against optax
# Results go under $OUT (default: benchmarks/results/gpu).
set -u
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
for stage in "$@"; do
  echo "=== $stage $(date -u +%T)"
  case "$stage" in
    env)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
      python3 -c "import jax, optax, numpy; print('jax', jax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__, jax.devices())"
      python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" ;;
    smoke)
      timeout 120 python3 - <<'PY'
import time, jax, jax.numpy as jnp, numpy as np, optax, gradxform as gx
t = time.perf_counter()
params = {"w": jnp.ones((512, 512)), "b": jnp.zeros(512)}
grads = jax.tree.map(lambda p: 0.01 * jnp.ones_like(p), params)
for name, tx, ref in [("adam", gx.adam(1e-3), optax.adam(1e-3)), ("lion", gx.lion(1e-4), optax.lion(1e-4))]:
    s, r = tx.init(params), ref.init(params)
    u, _ = jax.jit(tx.update)(grads, s, params)
    v, _ = jax.jit(ref.update)(grads, r, params)
    err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v)))
    print(f"{name}: max |gx - optax| after one step on the GPU = {err:.3g}")
f = lambda x: jnp.sum((x[1:] - x[:-1] ** 2) ** 2 * 100 + (1 - x[:-1]) ** 2)
sol = gx.minimize(f, jnp.zeros(20), method="bfgs")
print("minimize bfgs rosenbrock n=20:", sol.message, float(sol.value), int(sol.iterations))
print("smoke seconds", round(time.perf_counter() - t, 1))
PY
      ;;
    update_step)
      timeout 290 python3 benchmarks/update_step.py --device gpu --budget-s 200 --out "$OUT" ;;
    floor)
      timeout "${FLOOR_TIMEOUT:-100}" python3 benchmarks/update_step_floor.py --device gpu --trees 1000 gpt2 --repeats 10 --out "$OUT" ;;
    gpt_step)  # the H200 rows of train_gpu.md were measured with conditionals in the steps
      timeout "${GPT_STEP_TIMEOUT:-240}" python3 benchmarks/update_step_gpt.py --only "${GPT_STEP_ONLY:-adamw,adam,muon,lion,adafactor,schedule_free_adamw,sgd,lamb}" --rounds "${GPT_STEP_ROUNDS:-60}" --layouts 1 --constant --out "$OUT" ;;
    train)
      timeout "${TRAIN_TIMEOUT:-420}" python3 benchmarks/train.py --device gpu --out "$OUT" ${TRAIN_ARGS:-} ;;
    *) echo "unknown stage $stage" ;;
  esac
  echo "=== $stage done rc=$? $(date -u +%T)"
done
