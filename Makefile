# The two commands of the README. Each sets everything up (a virtualenv in .venv with the CPU torch wheel)
# and then runs: `make demo` a real search on synthetic data, `make test` the test suite.
# Other targets: `make ui` (the MLflow UI on the demo's runs), `make report`, `make train`, `make browser`.
PY ?= python3
VENV := .venv
TORCH ?= torch==2.13.0
# uv (from PyPI) installs the same packages as pip in about a tenth of the time (README: set-up time). uv does not
# read pip's configuration, so the wheel folders pip is configured with (`find-links`, e.g. where a local CPU
# torch wheel lies) are passed to it: without them uv would take torch 2.13.0 from PyPI, the CUDA build (GBs).
# INSTALLER=pip installs with pip alone.
# compileall: uv, unlike pip, writes no .pyc files, and where PYTHONDONTWRITEBYTECODE is set (this machine, many
# Docker images) Python never does either, so every process (each Ray worker, each command) compiled torch, Ray and
# MLflow from source again: a 12-trial search took 1.6x as long (benchmarks/RESULTS.md, "Start-up"). One step for
# both installers and for a venv made before it (uv's --compile-bytecode compiles only what it installs); it skips
# what is compiled already and ignores the few package files that no Python 3 compiles.
INSTALLER ?= uv

# Rebuilt when the dependencies or the way they are installed change.
$(VENV)/.installed: pyproject.toml Makefile
	$(PY) -m venv $(VENV)
ifeq ($(INSTALLER),pip)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH)" -e ".[test]"
else
	$(VENV)/bin/pip install -q uv
	links="$$(PIP_FIND_LINKS= $(VENV)/bin/pip config get global.find-links 2>/dev/null) $${PIP_FIND_LINKS:-}"; \
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python \
		$$(for d in $$links; do printf -- '--find-links %s ' "$$d"; done) "$(TORCH)" -e ".[test]"
endif
	$(VENV)/bin/python -m compileall -q -j 0 "$$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" > /dev/null 2>&1 || true
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/hsc-search run

# the MLflow UI on ./mlflow.db (what `make demo` wrote); open the link `make demo` printed
ui: setup
	MLFLOW_DISABLE_TELEMETRY=$${MLFLOW_DISABLE_TELEMETRY:-true} $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db

# the latest search's report, written again (e.g. for a search made before the report existed)
report: setup
	$(VENV)/bin/hsc-search report

train: setup
	$(VENV)/bin/python -m trainer --config trainer/configs/example.yaml --data synthetic:ave

# Chromium and its WebDriver from Debian's packages, for the UI test (tests/test_report_ui.py)
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver; \
	else echo "make browser: no apt-get here; install Chromium and chromedriver at /usr/bin yourself" >&2; exit 1; fi

test: setup browser
	$(VENV)/bin/python -m pytest -q

# A team's MLflow tracking server on PostgreSQL, bound to 127.0.0.1 (docs/team-server.md):
#   make team-server DATA=/srv/hsc-mlflow [PORT=5000]
DATA ?=
PORT ?= 5000
team-server: setup
	@test -n "$(DATA)" || { echo "error: DATA is missing: make team-server DATA=/path/to/folder [PORT=5000]" >&2; exit 2; }
	$(VENV)/bin/hsc-search team-server --data-dir "$(DATA)" --port $(PORT)

.PHONY: setup demo ui report train browser test team-server
