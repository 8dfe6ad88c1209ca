#!/usr/bin/env bash
# GPU machine: starts the training runs side by side on the one GPU, detached (setsid), so that later commands can
# carry onnxruntime-gpu meanwhile. Five seeds of the shared model (four heads), each on a shorter schedule (2 epochs,
# so the learning rate has decayed near zero by the time early stopping ends it; v2's 4-epoch run stopped at half its
# schedule, the rate still at half its peak), as ingredients for pick.sh's greedy soup. Logs: /var/tmp/ss/runs/NAME.
set -euo pipefail
source deploy/gpu/env.sh
runs=/var/tmp/ss/runs
mkdir -p "$runs"
launch() {
  local name=$1; shift
  mkdir -p "$runs/$name"
  OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false setsid nohup python3 -m streamsense train -o "$runs/$name" --device cuda --patience 6 \
    --max-minutes 9 "$@" > "$runs/$name/log" 2>&1 < /dev/null &
}
for seed in 13 21 34 55 89; do
  launch "shared-seed$seed" --lr 5e-5 --epochs 2 --eval-every 250 --seed "$seed"
done
sleep 20
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv
tail -n 2 "$runs"/*/log
