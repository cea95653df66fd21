# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install everything, run the whole DAG on the embedded demo data
#   make test   the same set-up, then the test suite
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Every package at the exact version and hash of requirements.lock (README "Pinned environment").
LOCK := requirements.lock
CORES ?= all
PYTEST_ARGS ?=
# Two test workers: much of the workflow tests' time is Snakemake start-up and SLURM polling. Three
# gave nothing on 2 cores (2026-12-07: 25 min 32 s against 25 min 49 s, the CPUs 95.5 % busy).
# --dist loadfile keeps each test file on one worker, so a module fixture (the SLURM run, the
# killed-training reference) runs once; the tiny DAG run is shared between workers by a file lock
# (tests/conftest.py); --no-loadscope-reorder keeps the order tests/conftest.py sets, slowest first.
# (pytest-xdist's xdist_group marks do not group under pytest 9.)
TEST_WORKERS ?= 2

export NO_ALBUMENTATIONS_UPDATE := 1
export MPLBACKEND := Agg

.PHONY: install demo test lint format bench bench-scale clean lock

$(BIN)/.installed: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --require-hashes -r $(LOCK)
	# The package itself, its dependencies already there; setuptools (its build backend) is in the lock.
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/snakemake --cores $(CORES)

test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/ruff format --check src tests benchmarks workflow/scripts
	$(BIN)/lint-imports  # the layers of src/ptxseg and no import circles (pyproject.toml)
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1

format: install
	$(BIN)/ruff check --fix src tests benchmarks workflow/scripts
	$(BIN)/ruff format src tests benchmarks workflow/scripts
	$(BIN)/snakefmt Snakefile workflow/rules

# The CPU benchmarks (the GPU ones: benchmarks/gpu_check.sh on a machine with a GPU, README "On a GPU").
CPU_BENCHMARKS := rle repack dag submission loader memory blend demo

bench: install
	for name in $(CPU_BENCHMARKS); do $(BIN)/python benchmarks/bench_$$name.py || exit 1; done

# The scale rehearsal (benchmarks/bench_scale.py): the full size takes about an hour on 2 cores and
# ~40 GB in SCALE_WORKDIR; e.g. `make bench-scale SCALE_IMAGES=1500` for a quick run.
SCALE_IMAGES ?= 15252
SCALE_WORKDIR ?= $(or $(TMPDIR),/tmp)

bench-scale: install
	$(BIN)/python benchmarks/bench_scale.py --images $(SCALE_IMAGES) --workdir $(SCALE_WORKDIR)

# Upgrading the pinned environment: newest releases under envs/constraints.txt (PyTorch's pin), for
# Python 3.11 on every platform, with hashes; envs/ptxseg.yaml follows. Then `make test`, and commit.
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" -c envs/constraints.txt

lock: install
	$(BIN)/python -m pip install -q uv
	$(UV_COMPILE) --upgrade -o envs/runtime.lock
	$(UV_COMPILE) --extra dev -c envs/runtime.lock -o $(LOCK)
	$(BIN)/python envs/conda_env.py envs/runtime.lock > envs/ptxseg.yaml

clean:
	rm -rf results .snakemake
