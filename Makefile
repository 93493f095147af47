# The front door: every command a developer, technician or CI needs.
# `make sim` runs the product, `make test` runs everything CI runs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
# Every Python package of .venv, transitive ones included, by exact version and hash (`make lock`).
LOCK   := requirements.lock
# The lock is written by uv, pinned here and kept in its own venv under build/ (not in .venv, whose
# contents are the lock's). The lock pins pip and setuptools too (the backend that installs the
# project itself, without build isolation): nothing unpinned reaches .venv.
UV_VERSION  := 0.13.9
LOCK_TOOLS  := pip==26.3 setuptools==84.2.1
LOCKER      := build/locktools/uv-$(UV_VERSION)/bin/uv
DEVLIB := build/device-lib/.stamp
WEB    := build/web/.stamp
MP32   := build/micropython32/micropython
STUBS  := build/stubs/.stamp
# The esp32 and rp2 stub packages install the same module names, so each gets its own tree.
STUBS_STDLIB := micropython-stdlib-stubs==1.29.0.post2

.PHONY: help setup lock deps sim test lint pytest bench soak clean sysdeps micropython32

help:
	@echo "make sim     run a simulated case (cloud arrives with the cloud service)"
	@echo "make test    lint + every test (firmware under the MicroPython Unix port)"
	@echo "make lint    ruff + pyright (firmware against the esp32 and rp2 stubs)"
	@echo "make bench   heap, boot-to-ready time and .mpy size figures"
	@echo "make soak    the safety property test on 10,000 random scripts"
	@echo "make fleet   10,000 simulated cases against the cloud at scale (ARGS=--help)"
	@echo "make lock    write requirements.lock from pyproject.toml (ARGS=--upgrade: newest versions)"

$(STAMP): pyproject.toml $(LOCK) tools/lockcheck.py
	@test -n "$(PYTHON)" || { echo "error: Python 3.11+ is required (python3.11 or python3 on PATH)"; exit 1; }
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python 3.11+ is required")'
	$(PYTHON) tools/lockcheck.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

setup: $(STAMP)

# Resolves the base and every extra for any platform (markers) from Python 3.11 on, keeping the
# versions already locked unless ARGS=--upgrade (or --upgrade-package NAME).
$(LOCKER):
	rm -rf build/locktools
	$(PYTHON) -m venv build/locktools/uv-$(UV_VERSION)
	build/locktools/uv-$(UV_VERSION)/bin/python -m pip install --quiet uv==$(UV_VERSION)

lock: $(LOCKER)
	printf '%s\n' $(LOCK_TOOLS) | $(LOCKER) pip compile --quiet pyproject.toml - --all-extras --universal \
		--python-version 3.11 --generate-hashes --custom-compile-command "make lock" -o $(LOCK) $(ARGS)
	$(PYTHON) tools/lockcheck.py

$(DEVLIB): $(STAMP) device-packages.lock
	$(PY) -m casectl.devdeps

# The store console's JavaScript and CSS, by exact version and integrity (never committed, never
# from a CDN at run time).
$(WEB): $(STAMP) web-assets.lock
	$(PY) tools/webassets.py

deps: $(DEVLIB) $(WEB)

# A 32-bit MicroPython (Debian's i386 Unix port) for the heap tests: micropython32.lock.
$(MP32): $(STAMP) micropython32.lock tools/micropython32.py
	$(PY) tools/micropython32.py

micropython32: $(MP32)

sysdeps:
	@tools/sysdeps.sh

# The console's assets only when the sim runs its cloud (`ARGS=--no-cloud`: the case alone).
sim: $(DEVLIB) $(if $(findstring --no-cloud,$(ARGS)),,$(WEB))
	$(PY) -m sim $(ARGS)

$(STUBS): $(STAMP) Makefile
	rm -rf build/stubs
	$(PY) -m pip install --quiet --no-deps --target build/stubs/esp32/lib/python3.11/site-packages micropython-esp32-stubs==1.29.0.post1 $(STUBS_STDLIB)
	$(PY) -m pip install --quiet --no-deps --target build/stubs/rp2/lib/python3.11/site-packages micropython-rp2-stubs==1.29.0.post1 $(STUBS_STDLIB)
	@touch $@

lint: $(STAMP) $(STUBS) $(DEVLIB)
	$(BIN)/ruff check firmware boards host_tools sim tests bench tools
	$(BIN)/pyright -p pyrightconfig.esp32.json
	$(BIN)/pyright -p pyrightconfig.rp2.json
	$(BIN)/pyright -p pyrightconfig.host.json

pytest: deps sysdeps $(MP32)
	$(BIN)/pytest

test: deps sysdeps lint pytest

bench: deps $(MP32)
	$(PY) bench/run.py

# The safety property test with 10,000 random scripts (CI runs a fixed 150): about an hour.
# Prints how many examples ran, and the failing script if one fails.
soak: deps sysdeps $(MP32)
	HYPOTHESIS_PROFILE=soak $(BIN)/pytest -p no:cacheprovider --hypothesis-show-statistics \
		tests/host/test_safety_props.py -k any_script

# The fleet simulator (issue 15, bench/fleet.py): PostgreSQL, Mosquitto, two workers, the API and
# 10,000 virtual cases (connecting at 100/s) sending 500 shopper requests/s, then a whole-fleet
# reconnect; both cores for five to fifteen minutes (docs/scaling.md).
# ARGS: e.g. --cases 2000 --workers 1 --rate 200 (--help lists them).
# Writes build/fleet.json.
.PHONY: fleet
fleet: deps sysdeps
	$(PY) -m bench.fleet $(ARGS)

# Single-line mutants the device tests must kill (tools/mutants.py); under a second, on a copy.
.PHONY: mutants
mutants: deps
	$(PY) tools/mutants.py

clean:
	rm -rf build .pytest_cache .ruff_cache .hypothesis
