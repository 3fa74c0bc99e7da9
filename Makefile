# DML Lab. Quick start: `make results` (set up + main job), then `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup results test lab lock bench clean browser docker image

setup: $(STAMP)

# (Re)install whenever the pins or the package metadata change.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $(STAMP)

# Execute every notebook headless into results/ (notebooks, HTML, figures, tables, README.md).
results: setup
	$(BIN)/labkit report

test: setup browser docker
	$(BIN)/python -m pytest

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
# Installs only as root; otherwise the browser tests skip and say why.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || (apt-get update && apt-get install -y --no-install-recommends chromium)

# Docker for the cluster tests, like `browser`: as root, install Debian's docker.io, docker-compose 1.29 and
# mmdebstrap, and start the daemon if none runs; otherwise the Docker tests skip and say why.
docker:
	@command -v dockerd >/dev/null || [ "$$(id -u)" != 0 ] || (apt-get update && apt-get install -y docker.io docker-compose mmdebstrap)
	@docker info >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v dockerd >/dev/null || \
	  { (dockerd >/tmp/dockerd.log 2>&1 &); for i in $$(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done; }

# The cluster's node image (docker/Dockerfile); `labkit cluster up` also builds it when missing or stale.
image: setup
	$(BIN)/labkit cluster build

# The student release in student/ (written where missing, never overwritten), opened in JupyterLab.
lab: setup
	$(BIN)/labkit release
	$(BIN)/jupyter lab student/

bench: setup
	$(BIN)/python benchmarks/baseline.py
	$(BIN)/python benchmarks/launch.py

# Re-pin after changing dependencies: writes requirements.lock and environment.yml.
lock: setup
	{ echo "# Exact versions for every student and CI run (pip constraints). Regenerate with: make lock"; \
	  echo "# torch 2.13.0 is the local CPU build; any other torch spec pulls several GB of CUDA packages."; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/'; } > requirements.lock
	$(BIN)/python tools/write_environment_yml.py

clean:
	rm -rf $(VENV) .pytest_cache
