#!/usr/bin/env bash
# The GPU benchmarks in one go, for a CUDA machine: embedding throughput (ViT-B/16, on-device
# JPEG decode and CPU decode), the 1M x 768 map, and (optionally) the map against the baseline.
#
#   bash bench/gpu.sh [OUTDIR] [STEPS...]      # STEPS: env tests embed embed_cpu_decode embed_compile map1m map70k
#
# Each step writes OUTDIR/<step>.json (the benchmark's last-line JSON) and OUTDIR/<step>.log.
# Wheels in .whl/ (packages the machine lacks) are installed to a private folder first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-bench/out/gpu}
shift || true
STEPS=${*:-env embed embed_cpu_decode map1m}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/corral-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/corral-site${PYTHONPATH:+:$PYTHONPATH}
fi
PY=${PYTHON:-python3}

run() {  # name, command...
  local name=$1; shift
  local t0=$SECONDS
  "$@" > >(tee "$OUTDIR/$name.log.out") 2> "$OUTDIR/$name.log" && tail -n 1 "$OUTDIR/$name.log.out" > "$OUTDIR/$name.json"
  echo "== $name rc=$? $((SECONDS - t0)) s: $(tail -c 600 "$OUTDIR/$name.json" 2>/dev/null || tail -n 5 "$OUTDIR/$name.log")"
  rm -f "$OUTDIR/$name.log.out"
}

for step in $STEPS; do
  case $step in
    env)
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
      $PY -c "import torch, torchvision, timm, numba, faiss, umap; print('torch', torch.__version__, 'tv', torchvision.__version__, 'timm', timm.__version__, 'numba', numba.__version__, 'faiss', faiss.__version__, 'cuda', torch.cuda.is_available())"
      ;;
    tests) $PY -m pytest -q -p no:cacheprovider -m gpu tests/pipeline/test_gpu.py ${TESTS_K:+-k $TESTS_K} 2>&1 | tail -n 15 ;;
    embed) run embed $PY bench/embed.py --model timm:vit_base_patch16_224 --random-weights --device cuda --count ${COUNT:-20000} --rounds 3 --gpu-decode on ;;
    embed_sync) run embed_sync $PY bench/embed.py --model timm:vit_base_patch16_224 --random-weights --device cuda --count ${COUNT:-20000} --rounds 2 --gpu-decode on --decode-ahead off ;;
    embed_cpu_decode) run embed_cpu_decode $PY bench/embed.py --model timm:vit_base_patch16_224 --random-weights --device cuda --count ${COUNT:-20000} --rounds 2 --gpu-decode off ;;
    embed_compile) run embed_compile $PY bench/embed.py --model timm:vit_base_patch16_224 --random-weights --device cuda --count ${COUNT:-20000} --rounds 2 --gpu-decode on --compile ;;
    map1m) run map1m $PY bench/map.py --datasets '' --synthetic 1000000,768 --no-baseline --device cuda ;;
    map70k) run map70k $PY bench/map.py --datasets mnist --scale --device cuda ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
