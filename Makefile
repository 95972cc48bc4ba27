# The two entry points a newcomer needs (see README): `make demo` and `make test`.
BP := .venv/bin/barcode-pipeline

.PHONY: setup demo test lint unit lock clean

setup:
	@bash scripts/setup.sh

## Install everything, bring up the stack and the pipeline, send a short demo load, print a summary.
demo: setup
	$(BP) demo

## Install everything, lint, type-check, start the stack and run the whole test suite.
test: setup lint
	$(BP) stack up
	bash scripts/test.sh

lint:
	.venv/bin/ruff check src harness tests
	.venv/bin/ruff format --check src harness tests
	.venv/bin/mypy

## Refresh uv.lock: newest versions within pyproject.toml's ranges, then the whole suite on them.
## Commit the new lock only if this passes.
lock:
	bash scripts/uv.sh lock --upgrade
	$(MAKE) test

unit: setup
	.venv/bin/pytest -q -m "not integration"

clean:
	-$(BP) stack down
	rm -rf .venv .tools
