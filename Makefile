# The two commands of the quick start are `make demo` and `make test`; the rest are steps.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test system venv kafka lint clean

$(BIN)/streamrec: pyproject.toml constraints.txt clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==26.3
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# The Python client is its own package; installed here so the suite tests it.
	$(BIN)/pip install -q -c constraints.txt -e clients/python
	touch $@

venv: $(BIN)/streamrec

system:
	@bash scripts/system-deps.sh

kafka: venv
	@$(BIN)/python -c "from streamrec.local.services import ensure_kafka_jars as e; print('Kafka jars:', e())"

test: system venv kafka lint
	$(BIN)/pytest

demo: system venv kafka
	$(BIN)/streamrec up

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .streamrec .pytest_cache
