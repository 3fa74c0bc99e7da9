# DML Lab. Quick start: `make results` (set up + main job), then `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup results test lab lock bench clean browser

setup: $(STAMP)

# (Re)install whenever the pins or the package metadata change.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $(STAMP)

# Execute every notebook headless into results/ (notebooks, HTML, figures, tables, README.md).
results: setup
	$(BIN)/labkit report

test: setup browser
	$(BIN)/python -m pytest

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
# Installs only as root; otherwise the browser tests skip and say why.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || (apt-get update && apt-get install -y --no-install-recommends chromium)

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
