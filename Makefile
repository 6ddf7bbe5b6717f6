# The two commands of the README. Each runs the idempotent setup step first.
SHELL := /bin/bash
SETUP := tools/setup_workspace.sh
RUN := tools/env.sh

.PHONY: setup demo test bench clean

setup:
	@$(SETUP)

demo: setup
	@$(RUN) python -m motus_ros.demo

test: setup
	@$(RUN) python -m pytest test

bench: setup
	@$(RUN) python bench/bench_model.py
	@$(RUN) python bench/bench_floor.py --out bench/results/floor-motus-small-cpu1.json
	@$(RUN) python bench/bench_gpu.py --out bench/results/gpu.json

clean:
	rm -rf build install log
