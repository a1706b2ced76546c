# Two commands for a newcomer:  `make run`  and  `make test`.
# Both create .venv and install what is missing first, so they work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install viz viz-build mlflow-ui benchmarks clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/kedro run

test: $(STAMP)
	$(BIN)/python -m pytest

# `kedro viz run` always serves dataset previews (the `reports` node previews the HTML report);
# `kedro viz run` has no --include-previews flag: only `kedro viz build` needs it.
viz: $(STAMP)
	$(BIN)/kedro viz run --host 127.0.0.1 --no-browser

viz-build: $(STAMP)
	$(BIN)/kedro viz build --include-previews

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean-venv:
	rm -rf $(VENV)
