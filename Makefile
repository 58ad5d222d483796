# The README's two commands on a fresh machine:
#   make study   set up .venv, then run the main job (python -m tools.study run -> results/cpu_default/)
#   make test    set up .venv and .venv-monailabel, then run the tests (pytest -q)
# Both are idempotent: an environment is installed when it is missing and updated when its requirements
# change; otherwise it is reused as it is. Extra arguments: make study STUDY_ARGS="--all-sites",
# make test PYTEST_ARGS="-q tests/test_losses.py".
PYTHON ?= python3
VENV := .venv
MONAILABEL_VENV := .venv-monailabel
STUDY_ARGS ?=
PYTEST_ARGS ?= -q

.PHONY: study test setup setup-monailabel

study: $(VENV)/installed.stamp
	$(VENV)/bin/python -m tools.study run $(STUDY_ARGS)

test: $(VENV)/installed.stamp $(MONAILABEL_VENV)/installed.stamp
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

setup: $(VENV)/installed.stamp

setup-monailabel: $(MONAILABEL_VENV)/installed.stamp

# torch first and pinned to the CPU wheel (requirements.txt), then the project itself, editable, then the
# optional real-data peer TAPS (MIT; --no-deps: its metadata asks for the CUDA build of onnxruntime)
$(VENV)/installed.stamp: requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -r requirements.txt
	$(VENV)/bin/pip install -e .
	$(VENV)/bin/pip install --no-deps lavlab-taps==1.1.2
	touch $@

# MONAI Label 0.8.5 needs torch 2.14.1 beside monai 1.6.1: its own environment (tests/test_monailabel.py).
# That torch is a CUDA build: the environment takes about 8.2 GiB. On a disk with less than
# MONAILABEL_MIN_FREE_GIB free it is not created (one line says so, no stamp is written, so the next
# `make test` tries again) and tests/test_monailabel.py reports itself skipped; any other failure of the
# install fails `make test`. --no-cache-dir: pip's cache would hold a second copy of the CUDA wheels.
MONAILABEL_MIN_FREE_GIB ?= 10
$(MONAILABEL_VENV)/installed.stamp: requirements-monailabel.txt pyproject.toml
	@free_kib=$$(df -Pk . | awk 'NR == 2 {print $$4}'); \
	if [ ! -x $(MONAILABEL_VENV)/bin/python ] && [ "$$free_kib" -lt $$(( $(MONAILABEL_MIN_FREE_GIB) * 1048576 )) ]; then \
	    echo "make: not creating $(MONAILABEL_VENV): $$(( free_kib / 1048576 )) GiB free, it needs about $(MONAILABEL_MIN_FREE_GIB) GiB; tests/test_monailabel.py will be skipped"; \
	else \
	    set -e; \
	    test -x $(MONAILABEL_VENV)/bin/python || $(PYTHON) -m venv $(MONAILABEL_VENV); \
	    $(MONAILABEL_VENV)/bin/pip install --no-cache-dir -r requirements-monailabel.txt; \
	    $(MONAILABEL_VENV)/bin/pip install --no-cache-dir --no-deps -e .; \
	    touch $@; \
	fi
