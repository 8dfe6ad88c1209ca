#!/usr/bin/env bash
# GPU machine: waits for the training runs, prints validation and test per run, makes a greedy soup of the shared runs
# (or, when no average beats the best run on validation, takes that run; test metrics play no part in the choice),
# exports it to /var/tmp/ss/model and copies its weights to $OUT in 15 MiB pieces (the first four; pick.sh rest
# sends the others).
set -euo pipefail
source deploy/gpu/env.sh
runs=/var/tmp/ss/runs
if [ "${1:-}" = rest ]; then cp /var/tmp/ss/pieces/w.0[4-9] "$OUT"/ 2>/dev/null || true; ls -la "$OUT"; exit 0; fi
while pgrep -f "streamsense train" > /dev/null; do sleep 5; done
python3 - "$runs" > "$OUT/runs.json" <<'PY'
import json, sys
from pathlib import Path
out = {}
for d in sorted(Path(sys.argv[1]).iterdir()):
    f = d / "training.json"
    if not f.exists():
        out[d.name] = {"error": (d / "log").read_text()[-2000:]}
        continue
    t = json.loads(f.read_text())
    out[d.name] = {k: t[k] for k in ("validation", "test", "steps", "minutes", "device", "config")}
print(json.dumps(out, indent=1))
PY
best=$(python3 -c "import json,sys; r=json.load(open('$OUT/runs.json')); print(max((k for k in r if k.startswith('shared') and 'validation' in r[k]), key=lambda k: r[k]['validation']['score']))")
echo "best shared run by validation: $best"
chosen="$runs/$best"
if python3 -m streamsense models soup --greedy "$runs"/shared-* -o /var/tmp/ss/soup; then chosen=/var/tmp/ss/soup; fi
python3 -m streamsense export "$chosen" -o /var/tmp/ss/model/streamsense-minilm 2>&1 | tail -n 5
mkdir -p /var/tmp/ss/pieces
cp "$chosen/training.json" "$OUT/training.json"
(cd /var/tmp/ss/pieces && rm -f w.* && split -b 15M -d "$chosen/model.safetensors" w. && sha256sum "$chosen/model.safetensors" > "$OUT/weights.sha256")
cp /var/tmp/ss/pieces/w.0[0-3] "$OUT"/
tar czf "$OUT/small.tgz" -C "$chosen" config.json tokenizer.json
ls -la "$OUT"
