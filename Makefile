# yzcore developer tasks. `make test` and `make up` work on a fresh machine:
# they create .venv and install what they need.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SOURCES := pyproject.toml setup.py $(wildcard yzcore/*.pyx yzcore/*.pxd)

.PHONY: help venv test test-core check-install bench wheel req-report up clean

help:
	@echo "make up          run a local network (15 nodes, 2 bridges, bootstrap) with its dashboard"
	@echo "make test        the whole test suite, both implementations, install checks"
	@echo "make bench       compiled-vs-pure speed ratios and the pytest-benchmark suite"
	@echo "make wheel       build and repair a wheel into wheelhouse/"
	@echo "make req-report  every requirement criterion with the tests that prove it"

# Editable install: builds the compiled modules in place; re-run when they change.
$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=70.1" wheel
	YZCORE_BUILD_EXTENSION=yes $(BIN)/python -m pip install --quiet -e ".[dev,webrtc]"
	touch $@

venv: $(STAMP)

test: test-core check-install

test-core: $(STAMP)
	$(BIN)/python -c "import sys, yzcore; sys.exit(0 if yzcore.USE_EXTENSIONS else 'compiled modules did not build')"
	$(BIN)/yz version
	$(BIN)/python -m pytest
	YZCORE_NO_EXTENSIONS=1 $(BIN)/python -c "import sys, yzcore; sys.exit(1 if yzcore.USE_EXTENSIONS else 0)"

# A fresh `pip install .` (isolated build) must use the compiled modules, and
# an install without Cython must fall back to the twins and pass on them.
check-install: $(STAMP)
	$(BIN)/python tests/check_install.py

bench: $(STAMP)
	$(BIN)/python benchmarks/core_speedup.py
	$(BIN)/python -m pytest benchmarks -q -p no:cacheprovider --benchmark-columns=min,median,mean,rounds

wheel: $(STAMP)
	rm -rf dist wheelhouse
	YZCORE_BUILD_EXTENSION=yes $(BIN)/python -m build --wheel --outdir dist .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/auditwheel repair dist/*.whl --wheel-dir wheelhouse
	@! $(BIN)/python -m zipfile -l wheelhouse/*.whl | grep -E '\.(c|cpp)\s' || (echo "generated C/C++ leaked into the wheel"; exit 1)
	@ls -l wheelhouse

req-report: $(STAMP)
	$(BIN)/python tests/req_report.py

# The main job: bootstrap server, 2 supervised bridges and 15 nodes as processes
# on 127.0.0.1, a live table here and the dashboard at http://127.0.0.1:8080/.
# Ctrl-C stops everything. Options: make up UP_ARGS="--nodes 30 --port 9000".
up: $(STAMP)
	$(BIN)/yz up $(UP_ARGS)

clean:
	rm -rf build dist wheelhouse .pytest_cache .benchmarks yzcore/*.so yzcore/*.c yzcore/*.cpp
