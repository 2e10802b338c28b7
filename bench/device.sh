#!/usr/bin/env bash
# The GPU checks (issue #13) in one call of the device tool, prepared here beforehand.
#
#   bash bench/device.sh prepare     # here: wheels, corpora and the commit into .device/
#   device run, carry [".device"], command "bash bench/device.sh run", timeout_s 560
#
# `prepare` downloads, for the device's Python (PYVER, 3.12), the wheels of the locked
# packages its image lacks (WHEELS; versions from requirements.lock), copies ../shared's
# corpora and eval/ (they do not travel by themselves) and records the commit: about 43 MB,
# under the tool's 64 MiB. `run` installs the wheels into /tmp/site and writes to $OUT:
# nvidia-smi's report, the torch path's tests (tests/test_skipgram.py, the CUDA one included)
# and bench/gpu.py's speed runs on CUDA (SIZES: 10M, then 50M words), each as gpu-<words>.json
# with its log, then the first size again in batches of WIDE pairs (8192; none when empty),
# as gpu-<words>-b<WIDE>.json: how much the batch size moves the speed (16384 diverges on the
# CPU runs of the same code). GPU_ARGS adds gpu.py arguments; a rehearsal on the CPU, in an
# environment with only the image's packages: SIZES=1000000 GPU_ARGS="--device torch", and
# PYVER=3.11 for prepare.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS="duckdb backports.zstd typer typing_extensions rich"
PYTHON=${PYTHON:-python3}

prepare() {
    rm -rf .device && mkdir -p .device/whl .device/shared || return
    local name pins=()
    for name in $WHEELS; do
        pins+=("$(grep -i -m1 "^${name//[-_.]/[-_.]}==" requirements.lock)") || {
            echo "error: $name is not in requirements.lock" >&2
            return 1
        }
    done
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --implementation cp \
        --python-version "${PYVER:-3.12}" --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .device/whl "${pins[@]}" || return
    cp -r ../shared/corpora ../shared/eval .device/shared/ || return
    git rev-parse --short HEAD > .device/commit
    du -sh .device
}

run() {
    local out=${OUT:-/tmp/quijote-device}
    mkdir -p "$out"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .device/whl/*.whl || return
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
    export BENCH_COMMIT="$(cat .device/commit)"
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1
    "$PYTHON" -m pytest -p no:cacheprovider -rs tests/test_skipgram.py 2>&1 | tee "$out/pytest.log"
    local words
    for words in ${SIZES:-10000000 50000000}; do  # the smaller first: it comes back if time runs out
        # shellcheck disable=SC2086  # GPU_ARGS is a list of arguments
        "$PYTHON" bench/gpu.py --corpora .device/shared/corpora --words "$words" \
            --out "$out/gpu-$words.json" ${GPU_ARGS:-} 2>&1 | tee "$out/gpu-$words.log"
    done
    local wide=${WIDE-8192} first=${SIZES:-10000000}
    first=${first%% *}
    if [ -n "$wide" ]; then
        # shellcheck disable=SC2086
        "$PYTHON" bench/gpu.py --corpora .device/shared/corpora --words "$first" \
            --batch-size "$wide" --out "$out/gpu-$first-b$wide.json" ${GPU_ARGS:-} 2>&1 |
            tee "$out/gpu-$first-b$wide.log"
    fi
}

case "${1:-}" in
    prepare | run) "$1" ;;
    *) echo "usage: bash bench/device.sh prepare|run" >&2; exit 2 ;;
esac
