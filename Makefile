# `make quickstart` and `make test` set up .venv themselves (scripts/setup.sh).
.PHONY: setup quickstart test lint bench

setup:
	./scripts/setup.sh

quickstart: setup
	rm -rf runs/quickstart.db runs/quickstart.db-wal runs/quickstart.db-shm runs/checkpoints/quickstart
	.venv/bin/platform search examples/quickstart.toml --storage sqlite:///runs/quickstart.db

# The suite under coverage: pytest, every `platform` subprocess and Ray's workers (coverage's
# subprocess patch and tests/coverage_hook; [tool.coverage.*] in pyproject.toml), combined.
COVERAGE_DIR := $(CURDIR)/build/coverage
COVERAGE := COVERAGE_FILE=$(COVERAGE_DIR)/.coverage .venv/bin/coverage

test: setup
	rm -rf $(COVERAGE_DIR) && mkdir -p $(COVERAGE_DIR)
	PYTHONPATH=$(CURDIR)/tests/coverage_hook $(COVERAGE) run -m pytest -q -n 2 --dist loadgroup --durations=25
	.venv/bin/python -m pytest -q -p no:asyncio examples/plugin-template   # the template's own tests
	$(COVERAGE) combine -q 2>/dev/null
	$(COVERAGE) report > $(COVERAGE_DIR)/report.txt
	@echo "coverage of autoplat/ (subprocesses and Ray workers included), per file in" \
		"build/coverage/report.txt:" && grep "^TOTAL" $(COVERAGE_DIR)/report.txt

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench: setup
	.venv/bin/python benchmarks/overhead.py
