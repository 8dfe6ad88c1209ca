# GPU machine: source from the project root after stage.sh (and an onnxruntime-gpu install).
# The checkout is not installed there: streamsense/__init__.py finds streams/, models/ and exporters/ beside it.
export PYTHONPATH=/opt/ort-gpu:/var/tmp/ss/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export STREAMSENSE_DATASETS_DIR=/var/tmp/ss/pack/datasets PYTHONUNBUFFERED=1
