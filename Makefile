PYTHON ?= python3
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test test-all demo bench bench-quick

install:
	$(PYTHON) -m pip install -e ".[dev,torch]"

# The README's test command (what CI runs). Slow full-size tests are opt-in: make test-all.
test:
	$(PYTHON) -m pytest -p no:benchmark -n 2 --dist loadgroup -q -m "not slow" tests

test-all:
	$(PYTHON) -m pytest -p no:benchmark -n 2 --dist loadgroup -q tests

# The main job: train CRAResNet20 on the embedded Fashion-MNIST default, evaluate, export, verify.
demo: install
	$(PYTHON) training/demo.py
