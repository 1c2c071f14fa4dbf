# The two commands: `make run` (the product) and `make test` (the suite). Both set up everything.
PORT ?= 8000
PYTHON ?= python3
ARGS ?=

.PHONY: run test bench lint

run:
	$(PYTHON) scripts/bootstrap.py
	.venv/bin/python -m gz_console.launcher run --port $(PORT)

test:
	$(PYTHON) scripts/bootstrap.py
	.venv/bin/python -m gz_console.launcher test $(ARGS)

bench:
	$(PYTHON) scripts/bootstrap.py
	.venv/bin/python -m gz_console.launcher bench $(ARGS)

lint:
	.venv/bin/python -m ruff check .
