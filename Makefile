# `make quickstart` and `make test` set up .venv themselves (scripts/setup.sh).
.PHONY: setup quickstart test lint bench

setup:
	./scripts/setup.sh

quickstart: setup
	rm -rf runs/quickstart.db runs/quickstart.db-wal runs/quickstart.db-shm runs/checkpoints/quickstart
	.venv/bin/platform search examples/quickstart.toml --storage sqlite:///runs/quickstart.db

test: setup
	.venv/bin/python -m pytest -q
	.venv/bin/python -m pytest -q -p no:asyncio examples/plugin-template   # the template's own tests

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench: setup
	.venv/bin/python benchmarks/overhead.py
