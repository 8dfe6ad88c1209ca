# GPU machine: source from the project root after stage.sh (and an onnxruntime-gpu install).
# The checkout is not installed there: /var/tmp/ss/src/streamsense links its folders the way pyproject.toml's
# package-dir maps them (streamsense/*, and streams/, models/, exporters/ as streamsense.streams/.models/.exporters).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
src=/var/tmp/ss/src/streamsense
mkdir -p "$src"
ln -sf "$root"/streamsense/* "$src"/
for package in streams models exporters; do ln -sfn "$root/$package" "$src/$package"; done
find "$src" -maxdepth 1 -xtype l -delete  # links to files the checkout no longer has
export PYTHONPATH=/opt/ort-gpu:/var/tmp/ss/site:${src%/streamsense}${PYTHONPATH:+:$PYTHONPATH}
export STREAMSENSE_DATASETS_DIR=/var/tmp/ss/pack/datasets PYTHONUNBUFFERED=1
