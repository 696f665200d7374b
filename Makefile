# The two commands of the README. Each sets everything up (a virtualenv in .venv with the CPU torch wheel)
# and then runs: `make demo` a real search on synthetic data, `make test` the test suite.
PY ?= python3
VENV := .venv
TORCH ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH)" -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/hsc-search run

train: setup
	$(VENV)/bin/python -m trainer --config trainer/configs/example.yaml --data synthetic:ave

test: setup
	$(VENV)/bin/python -m pytest -q

# A team's MLflow tracking server on PostgreSQL, bound to 127.0.0.1 (docs/team-server.md):
#   make team-server DATA=/srv/hsc-mlflow [PORT=5000]
DATA ?=
PORT ?= 5000
team-server: setup
	@test -n "$(DATA)" || { echo "error: DATA is missing: make team-server DATA=/path/to/folder [PORT=5000]" >&2; exit 2; }
	$(VENV)/bin/hsc-search team-server --data-dir "$(DATA)" --port $(PORT)

.PHONY: setup demo train test team-server
