#!/usr/bin/env bash
# Ready a Python that already holds torch and torchvision (a GPU image's own) to run equinorm from
# this checkout without touching its torch: only the missing extras are installed -- from .whl/
# when it exists (machines without network), else from the index, never with --upgrade.
# Usage: bash scripts/gpu_env.sh [python]   (make gpu-check calls it with $(GPU_PYTHON))
set -euo pipefail
PY=${1:-python3}
cd "$(dirname "$0")/.."
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "gpu-check: $PY has no torch/torchvision: run 'make install' (a .venv with torch) instead" >&2
  exit 2
fi
# module -> distribution; wandb and submitit are not needed (wandb.mode=disabled, local launcher)
missing=$("$PY" - <<'PYEOF'
import importlib.util as u
need = {
    "hydra": "hydra-core", "omegaconf": "omegaconf", "antlr4": "antlr4-python3-runtime",
    "yaml": "PyYAML", "numpy": "numpy", "pandas": "pandas", "scipy": "scipy",
    "matplotlib": "matplotlib", "tqdm": "tqdm", "PIL": "pillow", "pytest": "pytest",
}
print(" ".join(dist for mod, dist in need.items() if u.find_spec(mod) is None))
PYEOF
)
if [ -z "$missing" ]; then
  echo "gpu-check: $PY has every package equinorm needs (torch $("$PY" -c 'import torch; print(torch.__version__)'))"
  exit 0
fi
echo "gpu-check: installing $missing into $PY"
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --find-links .whl $missing
else
  "$PY" -m pip install -q $missing
fi
