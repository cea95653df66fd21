# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install everything, run the whole DAG on the embedded demo data
#   make test   the same set-up, then the test suite
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# PyTorch first and pinned: a bare `pip install torch` may pull a newer CUDA build of several GB.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
CORES ?= all
PYTEST_ARGS ?=
# Two test workers: much of the workflow tests' time is Snakemake start-up and SLURM polling.
# --dist loadfile keeps each test file on one worker, so a module fixture (the SLURM run, the
# killed-training reference) runs once; the tiny DAG run is shared between workers by a file lock
# (tests/conftest.py); --no-loadscope-reorder keeps the order tests/conftest.py sets, slowest first.
# (pytest-xdist's xdist_group marks do not group under pytest 9.)
TEST_WORKERS ?= 2

export NO_ALBUMENTATIONS_UPDATE := 1
export MPLBACKEND := Agg

.PHONY: install demo test lint format bench bench-scale clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e '.[dev]'
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

clean:
	rm -rf results .snakemake
