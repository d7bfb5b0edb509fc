# tideflow: `make demo` and `make test` work from a clean clone (see README).
# The virtual environment lives in .venv; cargo's cache in target/.

VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

TEST_DEPS := "maturin>=1.5,<2" pytest pytest-timeout hypothesis pytest-benchmark ruff mypy pydantic msgspec \
	"asyncpg>=0.30" "redis[hiredis]>=5" "pymongo>=4.10"

.PHONY: all venv build demo test test-rust test-python lint stubtest bench services clean

all: build

$(VENV)/.deps: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TEST_DEPS)
	touch $@

venv: $(VENV)/.deps

# release build of the extension, installed editable into .venv
build: venv
	maturin develop --release -q

demo: build
	$(PY) examples/order_saga.py
	$(PY) examples/approval.py

test: build test-rust lint test-python

test-rust:
	cargo test --workspace --quiet

# the server stores' tests need PostgreSQL, Redis and SecantusDB: `services.sh with` installs and
# starts whichever is not running (as .ci/run does), and stops afterwards what it started
test-python:
	bash scripts/services.sh with -- $(PY) -m pytest -q

lint: venv
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	$(VENV)/bin/ruff check python tests benchmarks examples
	$(VENV)/bin/ruff format --check python tests benchmarks examples
	$(VENV)/bin/mypy
	$(MAKE) --no-print-directory stubtest

stubtest: build
	$(PY) -m mypy.stubtest tideflow._core --allowlist scripts/stubtest-allowlist.txt

bench: build
	bash scripts/services.sh with -- $(PY) benchmarks/run.py

services:
	bash scripts/services.sh install
	bash scripts/services.sh start
	@echo 'export the test variables with: eval "$$(bash scripts/services.sh env | sed s/^/export\ /)"' 

clean:
	rm -rf $(VENV) target benchmarks/results.json
