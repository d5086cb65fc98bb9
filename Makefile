# Every target bootstraps .venv from Python 3.10 and installs the pinned set in constraints.txt.
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
WORKDIR   ?= demo-run
PYTEST_ARGS ?=

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup system-deps demo test test-core bench lint clean

setup: $(STAMP)

$(STAMP): constraints.txt pyproject.toml
	@py=$$(scripts/find-python310) || exit 1; \
	  [ -x $(BIN)/python ] || { echo "Creating $(VENV) from $$py"; "$$py" -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable ".[test]"
	@touch $(STAMP)

# Headless Chromium renders the report in one test (skipped when absent); kubectl renders the
# Kubernetes manifests. Debian packages; needs root (CI runs as root).
system-deps:
	@command -v chromium >/dev/null && command -v kubectl >/dev/null || { \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver \
	    $$(command -v kubectl >/dev/null || echo kubernetes-client) >/dev/null; }

demo: $(STAMP)
	$(BIN)/collabopt demo --workdir $(WORKDIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-core: $(STAMP)
	$(BIN)/python -m pytest -q tests/components/core $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/demo_run.py

clean:
	rm -rf $(VENV) $(WORKDIR) .pytest_cache
