# The two commands of the README. Each runs the idempotent setup step first.
SHELL := /bin/bash
SETUP := tools/setup_workspace.sh
RUN := tools/env.sh

.PHONY: setup demo lint test bench clean

setup:
	@$(SETUP)

demo: setup
	@$(RUN) python -m motus_ros.demo

# ruff (pinned in tools/constraints.txt, settings in ruff.toml): lint + import order, then the formatter's check.
lint: setup
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .

test: lint
	@$(RUN) python -m pytest test

bench: setup
	@$(RUN) python bench/bench_model.py

clean:
	rm -rf build install log
