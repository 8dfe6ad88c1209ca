#!/usr/bin/env bash
# GPU machine: `streamsense bench` on the exported fp16 model with the CUDA provider: several workers share the GPU,
# batches of up to 1024 (the CUDA default cap; they follow load below it) sorted by length into runs of 256.
# Results: $OUT/bench.json, $OUT/bench-curve*.json and the log.
set -euo pipefail
source deploy/gpu/env.sh
export STREAMSENSE_MODEL=${STREAMSENSE_MODEL:-/var/tmp/ss/model/streamsense-minilm} STREAMSENSE_DEVICE=cuda
export STREAMSENSE_LENGTH_GROUP_SIZE=${STREAMSENSE_LENGTH_GROUP_SIZE:-256}
export STREAMSENSE_TOPIC_PARTITIONS=${STREAMSENSE_TOPIC_PARTITIONS:-8}
# STREAMSENSE_BATCH_SIZE unset: the cap is the CUDA default (1024); set it to compare caps
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 - <<'PY'
# model stage alone at several run lengths inside a batch of 1024 (the bench below uses one)
import time
from streamsense.streams.worker import load_classifier
from streamsense.bench import bench_texts
from streamsense.settings import Settings
texts = bench_texts(Settings(), 204800)
runtimes = {group: load_classifier(Settings(length_group_size=group)).runtime for group in (64, 256, 1024)}
batches = [runtimes[64].tokenize(texts[i:i + 1024]) for i in range(0, len(texts), 1024)]
for group, runtime in runtimes.items():
    runtime.infer(batches[0])
    start = time.perf_counter()
    for b in batches:
        runtime.infer(b)
    print(f"model only, batch 1024, length runs of {group}: {len(texts) / (time.perf_counter() - start):,.0f} msg/s "
          f"({runtime.session.get_providers()[0]})")
PY
python3 -m streamsense bench --messages "${MESSAGES:-500000}" --model-messages 200000 --workers "${WORKERS:-4}" \
  --producers "${PRODUCERS:-4}" --db /var/tmp/ss/bench.db --json "$OUT/bench.json"
tail -n 20 /var/tmp/ss/bench.worker0.log
# the latency–throughput table with the fp16 model (batches that follow load): a burst for the ceiling, then paced
# rows at 10/50/80/100 % of it, on SQLite and on PostgreSQL (where the test dependencies put one: deploy/test-deps.sh)
python3 -m streamsense bench --load --curve "${CURVE:-10,50,80,100}" --messages "${CURVE_MESSAGES:-300000}" \
  --workers "${WORKERS:-4}" --producers "${PRODUCERS:-4}" --db /var/tmp/ss/bench.db --json "$OUT/bench-curve.json"
if python3 -c "import psycopg, sqlalchemy; sqlalchemy.create_engine('postgresql+psycopg://postgres@127.0.0.1:5432/postgres').connect()" 2>/dev/null; then
  python3 -m streamsense bench --load --curve "${CURVE:-10,50,80,100}" --messages "${CURVE_MESSAGES:-300000}" \
    --workers "${WORKERS:-4}" --producers "${PRODUCERS:-4}" --database postgresql --db /var/tmp/ss/bench.db \
    --json "$OUT/bench-curve-postgres.json"
fi
# mixed English/Chinese traffic against English only, one run each (issue: within 10 %); Chinese goes to the
# streamsense-bge-zh model of the registry (STREAMSENSE_LANGUAGE_MODELS)
for share in 0 0.3; do
  python3 -m streamsense bench --load --messages "${MIXED_MESSAGES:-300000}" --zh-share "$share" --workers "${WORKERS:-4}" \
    --producers "${PRODUCERS:-4}" --db /var/tmp/ss/bench.db --json "$OUT/bench-load-zh-$share.json"
done
