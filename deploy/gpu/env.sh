# GPU machine: source from the project root after stage.sh (and ../shared/gpu's install.sh for onnxruntime-gpu).
export PYTHONPATH=/opt/ort-gpu:/var/tmp/ss/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export STREAMSENSE_DATASETS_DIR=/var/tmp/ss/pack/datasets PYTHONUNBUFFERED=1
