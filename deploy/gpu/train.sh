#!/usr/bin/env bash
# GPU machine: starts the training runs side by side on the one GPU, detached (setsid), so that later commands can
# carry onnxruntime-gpu meanwhile. The shared model (four heads) at three learning rates and two seeds, and one
# model per task for the shared-versus-separate comparison. Logs and outputs: /var/tmp/ss/runs/NAME.
set -euo pipefail
source deploy/gpu/env.sh
runs=/var/tmp/ss/runs
mkdir -p "$runs"
launch() {
  local name=$1; shift
  mkdir -p "$runs/$name"
  OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false setsid nohup python3 -m streamsense train -o "$runs/$name" --device cuda --patience 6 \
    --max-minutes 6 "$@" > "$runs/$name/log" 2>&1 < /dev/null &
}
launch shared-lr5 --lr 5e-5 --epochs 4 --eval-every 250
launch shared-lr5-seed21 --lr 5e-5 --epochs 4 --eval-every 250 --seed 21
launch only-sentiment --tasks sentiment --lr 5e-5 --epochs 4 --eval-every 250
launch only-offensive --tasks offensive --lr 5e-5 --epochs 4 --eval-every 100
launch only-hate --tasks hate --lr 5e-5 --epochs 4 --eval-every 100
launch only-complaint --tasks complaint --lr 5e-5 --epochs 4 --eval-every 50
sleep 20
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv
tail -n 2 "$runs"/*/log
