# Two commands on a fresh machine: `make demo` and `make test`. Everything installs into .venv,
# at the exact versions in requirements/lock.txt (lower bounds live in pyproject.toml).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
LOCK := requirements/lock.txt
BENCH_LOCK := requirements/lock-bench.txt
OUT ?= out/demo
# uv writes the locks; it is pinned so that `make lock` resolves the same way next year.
UV_VERSION := 0.13.9
# The locks are for CI's platform and Python, wherever `make lock` runs.
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	--custom-compile-command "make lock"

.PHONY: install demo test test-fast lint lock lock-upgrade bench clean chromium

# pip (not uv) installs, so the machine's pip settings (local wheel mirrors, constraints) still apply.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r $(LOCK)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m edgeproof.demo --out $(OUT)

# Every check runs even when one before it fails, so one run shows all there is to fix.
LINT = rc=0; \
	echo "ruff check"; $(BIN)/ruff check || rc=1; \
	echo "ruff format --check"; $(BIN)/ruff format --check || rc=1; \
	echo "mypy"; $(BIN)/mypy || rc=1; \
	exit $$rc

lint: $(STAMP)
	@$(LINT)

# pytest runs on one pytest-xdist worker per CPU this machine gives us (nproc, which would also obey
# OMP_NUM_THREADS, hence env -u), at most 4: past that the longest test file, which one worker runs alone,
# sets the wall time. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= $(shell n=$$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
# Whole files per worker: a module-scoped fixture (a measured release, the demo folder) is built once.
# (Not loadgroup: with pytest 9.2 its xdist_group marks are silently ignored, pytest-xdist issue #1386.)
PYTEST_XDIST = -n $(PYTEST_WORKERS) --dist loadfile

# Lint first, then pytest whatever lint said; fails if either failed.
test: $(STAMP) chromium
	@lint=0; ($(LINT)) || lint=1; \
	$(BIN)/python -m pytest $(PYTEST_XDIST) --durations=15 || exit $$?; \
	if [ $$lint -ne 0 ]; then echo "make test: the tests passed but lint failed (see above)"; exit 1; fi

# Without the tests marked @pytest.mark.slow (each takes more than ~4 s here), and without lint.
test-fast: $(STAMP) chromium
	$(BIN)/python -m pytest $(PYTEST_XDIST) -m "not slow"

# Re-resolve after a change to pyproject.toml, keeping every pin that still fits; the bench lock is
# constrained by the test lock so the two never disagree on a shared package.
lock:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(UV_COMPILE) $(UV_FLAGS) --extra test -o $(LOCK)
	$(UV_COMPILE) $(UV_FLAGS) --extra test --extra bench -c $(LOCK) -o $(BENCH_LOCK)

# Move every pin to the newest release the lower bounds allow.
lock-upgrade:
	$(MAKE) lock UV_FLAGS=--upgrade

# The report test opens the page in Debian's headless Chromium; install it when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; the report's browser test will be skipped (and fail under CI=true)"

$(BENCH_STAMP): $(BENCH_LOCK) $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check -r $(BENCH_LOCK)
	touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) out .edgeproof .mypy_cache .ruff_cache
