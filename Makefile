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

clean:
	rm -rf build install log
