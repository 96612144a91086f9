#!/usr/bin/env bash
# The one command for a lent GPU machine (no network; python3 with jax + CUDA plugin):
#     bash scripts/gpu_check.sh        (from the repository root; carry [".whl"])
# 1. installs the carried wheels (.whl/: cryptography and its cffi / pycparser, which the
#    dealer's AES PRG needs) into /tmp/site, 2. nvidia-smi -L, 3. scripts/gpu_check.py on the
#    GPU (timeout 300 s), 4. the same forward passes on the machine's CPU cores (timeout
#    100 s) for a side-by-side. Logs and JSON go to $OUT (default /tmp/gpu_check_out):
#    gpu_check.json, gpu_check_cpu.json, gpu.log, cpu.log, env.txt. About 7 minutes at most.
set -u
cd "$(dirname "$0")/.."
export OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONPATH=.
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:.
fi
{
    date -u
    nvidia-smi -L || echo "nvidia-smi failed"
    nproc
    python3 -c "import sys, jax, jaxlib, numpy, cryptography, flax; print(sys.version.split()[0], 'jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'numpy', numpy.__version__, 'cryptography', cryptography.__version__, 'flax', flax.__version__)" 2>&1 | tail -3
} 2>&1 | tee "$OUT/env.txt"

echo "== GPU run (timeout 300 s) =="
timeout -k 10 300 python3 -u scripts/gpu_check.py --platform gpu 2>&1 | tee "$OUT/gpu.log"
echo "gpu run exit: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu.log"

echo "== CPU run on this machine's cores, same model (timeout 100 s) =="
timeout -k 10 100 python3 -u scripts/gpu_check.py --platform cpu --tag cpu --sections forward --tokens 1 8 \
    --prefill 8 --prefill-mode skip --repeats 2 2>&1 | tee "$OUT/cpu.log"
echo "cpu run exit: ${PIPESTATUS[0]}" | tee -a "$OUT/cpu.log"
ls -la "$OUT"
