# Two entry points for a newcomer: `make demo` and `make test`.
# Both create/refresh .venv/ from requirements/constraints.txt (exact pins).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: venv demo demo-segment demo-detect test check bench clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pvtv2 demo --out $(DEMO_DIR)

demo-segment: $(STAMP)
	$(VENV)/bin/pvtv2 demo --task segment --out runs/demo-segment

demo-detect: $(STAMP)
	$(VENV)/bin/pvtv2 demo --task detect --out runs/demo-detect

# Two pytest-xdist workers, one torch thread each (tests/conftest.py); --dist loadfile keeps a
# module's tests, and the model its module fixture trains, on one worker.
PYTEST_PARALLEL ?= -n 2 --dist loadfile
# The files with the longest runs first (then the rest of tests/, each file once), so that neither
# worker is left with a long file at the end while the other idles.
HEAVY_FIRST = tests/test_detection.py tests/test_detection_kinds.py tests/test_export.py \
	tests/test_detection_cascade.py tests/test_detection_runs.py tests/test_segmentation.py tests

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_PARALLEL) $(HEAVY_FIRST)

# The fast lane for the edit-test loop: everything but the end-to-end training runs.
check: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_PARALLEL) -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/pvtv2 bench --compare timm

clean:
	rm -rf $(VENV) runs build src/*.egg-info
