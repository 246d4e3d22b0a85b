# pehp developer entry points.  Every target installs what it needs, idempotently.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PEHP   := $(VENV)/bin/pehp
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get
DEMO   ?= samples/x64/fix_globals

.PHONY: setup toolchain wine chromium sarif-validator test test-fast demo samples bench realworld realcode patchproof lint typecheck fuzz clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

# clang-22 / lld-22 / llvm-22 from Debian, only when missing.
toolchain:
	@if ! command -v clang-cl-22 >/dev/null || ! command -v lld-link-22 >/dev/null \
	    || ! command -v llvm-readobj-22 >/dev/null; then \
	  echo "installing clang-22 lld-22 llvm-22"; \
	  $(APT) update -qq && $(APT) install -y -qq --no-install-recommends clang-22 lld-22 llvm-22 >/dev/null; \
	fi

# wine64 from Debian (runs the x64 images in tests/test_wine*.py), only when missing.
wine:
	@if [ ! -x /usr/lib/wine/wine64 ]; then \
	  echo "installing wine64"; \
	  $(APT) update -qq && $(APT) install -y -qq --no-install-recommends wine64 >/dev/null; \
	fi

# Debian's chromium (headless: tests/test_report_browser.py opens every sample's report), only when missing.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing chromium"; \
	  $(APT) update -qq && $(APT) install -y -qq --no-install-recommends chromium >/dev/null; \
	fi

# Microsoft's SARIF validator (Sarif.Multitool, npm @microsoft/sarif-multitool) into .cache/npm,
# only when missing; tests/test_sarif_validator.py runs it on the logs of check and check-tree.
SARIF_MULTITOOL_VERSION ?= 5.7.0
SARIF_MULTITOOL := .cache/npm/node_modules/@microsoft/sarif-multitool-linux/Sarif.Multitool
sarif-validator:
	@if [ ! -x $(SARIF_MULTITOOL) ]; then \
	  echo "installing @microsoft/sarif-multitool $(SARIF_MULTITOOL_VERSION)"; \
	  command -v npm >/dev/null || { $(APT) update -qq && $(APT) install -y -qq --no-install-recommends npm >/dev/null; }; \
	  mkdir -p .cache/npm && npm install --silent --no-audit --no-fund --prefix .cache/npm \
	    @microsoft/sarif-multitool@$(SARIF_MULTITOOL_VERSION) && chmod u+x $(SARIF_MULTITOOL); \
	fi

test: setup toolchain wine chromium sarif-validator
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not toolchain and not network"

REJECT ?= samples/x64/inline_pulls
HPARGS = --objects $(1)/intermediate.objs --functions-file $(1)/hotpatch_functions.txt

DEMO_OUT := demo-out

demo: setup
	@mkdir -p $(DEMO_OUT)
	$(PEHP) info $(DEMO)/intermediate.dll $(call HPARGS,$(DEMO))
	$(PEHP) diff $(DEMO)/base.dll $(DEMO)/intermediate.dll
	$(PEHP) check $(DEMO)/base.dll $(DEMO)/intermediate.dll $(call HPARGS,$(DEMO))
	@echo "--- a change the gate must reject (exit code 1 expected):"
	$(PEHP) check $(REJECT)/base.dll $(REJECT)/intermediate.dll $(call HPARGS,$(REJECT)); test $$? -eq 1
	@echo "--- the patch: plan, final image, its table, verification, and the patch applied in an emulator:"
	$(PEHP) plan $(DEMO)/base.dll $(DEMO)/intermediate.dll $(call HPARGS,$(DEMO))
	$(PEHP) emit-final $(DEMO)/base.dll $(DEMO)/intermediate.dll -o $(DEMO_OUT)/final.dll --overwrite $(call HPARGS,$(DEMO))
	$(PEHP) inspect $(DEMO_OUT)/final.dll --pdb $(DEMO)/intermediate.pdb
	$(PEHP) verify $(DEMO_OUT)/final.dll --base $(DEMO)/base.dll --intermediate $(DEMO)/intermediate.dll $(call HPARGS,$(DEMO))
	$(PEHP) simulate $(DEMO)/base.dll $(DEMO_OUT)/final.dll --pdb $(DEMO)/intermediate.pdb \
	    --calls-file $(DEMO)/expect.toml --patch-after 2 --undo

samples: toolchain
	bash samples/build.sh

# Byte-compiled first, as a regular (non-editable) install would be: the environment may
# forbid writing .pyc files (PYTHONDONTWRITEBYTECODE), and compiling on every start
# would count in every figure.
bench: setup toolchain
	$(PY) -m compileall -q pehotpatch >/dev/null
	$(PY) bench/run.py

# info/diff/check on every image pair of two msvc-runtime and two numpy releases (downloaded
# into .cache/), info checked against pefile and llvm-readobj-22; writes docs/REALWORLD.md.
realworld: setup toolchain
	$(PY) tools/realworld.py

# Real upstream C libraries (lz4, xxHash, Brotli) at two releases, from the sdists that bundle them
# (downloaded into .cache/), built as hot-patch pairs and gated; writes docs/REALCODE.md.
realcode: setup toolchain
	$(PY) tools/realcode.py

# Generated pairs checked, emitted (--force) and applied to their base in the emulator: no
# "patchable" verdict may misbehave (docs/SIMULATE.md, "The gate against behaviour");
# PROOF_GEN=hazard (hazard-cpp: C++): tools/hazardgen.py's pairs, which carry the hazards of the gate's rules.
PROOF_SEEDS ?= 0-299
PROOF_GEN ?= pairgen
patchproof: setup toolchain
	$(PY) tools/patchproof.py --seeds $(PROOF_SEEDS) --generator $(PROOF_GEN)

# The long fuzz run (docs/FUZZING.md): FUZZ_INPUTS inputs over every command on FUZZ_JOBS
# cores, seeded with the samples, the real msvc-runtime DLLs (FUZZ_CORPUS=0: no network)
# and the PDB reader's C/C++ test programs when clang-cl-22 is installed (FUZZ_BUILT=0:
# not); prints inputs/s and findings, keeps them under fuzz-out/.
FUZZ_INPUTS ?= 100000
FUZZ_SEED   ?= 1
FUZZ_JOBS   ?= 2
FUZZ_CORPUS ?= 1
FUZZ_BUILT  ?= 1
fuzz: setup
	$(PY) -m fuzz run --inputs $(FUZZ_INPUTS) --seed $(FUZZ_SEED) --jobs $(FUZZ_JOBS) --out fuzz-out \
	    $(if $(filter 1,$(FUZZ_CORPUS)),--corpus) $(if $(filter 1,$(FUZZ_BUILT)),--built)

lint: setup
	$(PY) -m ruff check pehotpatch tests tools fuzz bench
	$(PY) -m mypy pehotpatch

typecheck: setup
	$(PY) -m mypy pehotpatch

clean:
	rm -rf $(VENV) .cache build .pytest_cache .ruff_cache .mypy_cache $(DEMO_OUT)
