#!/usr/bin/env bash
# The Python packages a GPU image without network lacks, as wheels in .whl/ (git-ignored; carried
# to the machine): hydra-core, omegaconf, antlr4-python3-runtime and submitit at requirements.lock's
# versions (experiment/ imports submitit's JobEnvironment: the H200 check failed without it).
# Everything else the GPU check needs (torch, numpy, pandas, scipy, matplotlib, pytest, PyYAML,
# scikit-learn, pillow, tqdm, cloudpickle) is on the image; wandb is not needed (wandb.mode=
# disabled, local launcher). docs/performance.md has the device command that installs them.
# Usage: bash scripts/gpu_wheels.sh   (make gpu-wheels; PYTHON=... picks the pip that downloads)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pinned() {  # the version requirements.lock pins (the same for every Python it covers)
  grep -E "^$1==" requirements.lock | head -1 | sed -E 's/^[^=]+==([^ ;]+).*/\1/'
}
rm -rf .whl && mkdir .whl
# hydra-core, omegaconf and submitit are pure-Python wheels: any Python 3 installs them
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d .whl \
  "hydra-core==$(pinned hydra-core)" "omegaconf==$(pinned omegaconf)" "submitit==$(pinned submitit)"
# omegaconf's antlr4 runtime (4.9.x) is published as a source archive only: build its wheel here
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w .whl \
  "antlr4-python3-runtime==$(pinned antlr4-python3-runtime)"
ls .whl
du -sh .whl
