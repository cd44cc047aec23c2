# Set-up and everyday targets. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint format bench clean transfer-tiny mm test-mm

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The SAM 2 teachers need the `sam2` package, which ships only as source: its build imports torch and
# compiles an optional CUDA extension (used by SAM 2's video post-processing, not by its image
# encoder). So it is built after torch is in the venv, against that torch, without the extension.
SAM2 := sam2==1.1.0
INSTALL_SAM2 := SAM2_BUILD_CUDA=0 $(BIN)/pip install --quiet --no-build-isolation "$(SAM2)"

# Re-install only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	$(INSTALL_SAM2)
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"
	$(INSTALL_SAM2)
	touch $@ $(VENV)/.installed

# The OpenMMLab stack (docs/openmmlab.md), in this same venv: onedl-mmcv's ops built
# from source against the venv's torch by tools/build_mmcv.sh (once per machine, then cached), then
# the pinned mm extra, whose onedl-mmcv requirement that wheel already meets.
$(VENV)/.installed-mm: pyproject.toml tools/build_mmcv.sh $(VENV)/.installed-test
	WHEEL=$$(tools/build_mmcv.sh $(BIN)/python) && $(BIN)/pip install --quiet "$$WHEEL"
	$(BIN)/pip install --quiet -e ".[test,mm]"
	touch $@

mm: $(VENV)/.installed-mm

# The tests against the real OpenMMLab classes; VFMKD_REQUIRE_MM makes a missing stack a failure.
test-mm: $(VENV)/.installed-mm
	VFMKD_REQUIRE_MM=1 $(BIN)/python -m pytest -m mm

demo: $(VENV)/.installed
	$(BIN)/vfmkd demo

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m vfmkd_ray.config_reference --check
	$(BIN)/python -m pytest

# lint-imports: the package's layers; config_reference --check: docs/config-reference.md is the schema's.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m vfmkd_ray.config_reference --check

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Measured figures, not timed tests: benchmarks/results.md and results.json (see docs/performance.md).
# BENCH_FLAGS passes run_all's flags, e.g. BENCH_FLAGS='--only training --gpu'. The OpenMMLab
# stack is there for recipe_parity, which runs MMYOLO's own trainer beside vfmkd's.
BENCH_FLAGS ?=
bench: $(VENV)/.installed-mm
	$(BIN)/python -m benchmarks.run_all $(BENCH_FLAGS)

# Does distillation help? docs/transfer.md: teacher detector -> its features into a
# store -> a student distilled without labels -> fine-tunes from it and from random init.
TINY := configs/transfer_tiny.yaml
TINY_RUNS := outputs/transfer_tiny/runs
transfer-tiny: $(VENV)/.installed
	$(BIN)/vfmkd synth $(TINY)
	$(BIN)/vfmkd train $(TINY) name=teacher student.size=s 'teachers={}' 'distill.terms={}'
	$(BIN)/vfmkd precompute $(TINY)
	$(BIN)/vfmkd train $(TINY) 'heads={}' neck=null
	$(BIN)/vfmkd transfer $(TINY) --backbones \
		distilled=$(TINY_RUNS)/distilled/best_backbone.safetensors random=random

clean:
	rm -rf outputs .pytest_cache .ruff_cache .import_linter_cache .grimp_cache
