# The two commands of the README. Each runs the idempotent setup step first.
SHELL := /bin/bash
SETUP := tools/setup_workspace.sh
RUN := tools/env.sh

.PHONY: setup demo lint test bench clean lerobot-check

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

# Two-way check against the real lerobot 0.4.4 in its own venv (.lerobot-venv, built on first use).
lerobot-check: setup
	@tools/lerobot_check.sh

bench: setup
	@$(RUN) python bench/bench_model.py
	@$(RUN) python bench/bench_floor.py --out bench/results/floor-motus-small-cpu1.json
	@$(RUN) python bench/bench_gpu.py --out bench/results/gpu.json

clean:
	rm -rf build install log
