# crossgap — two commands for a fresh clone:  `make book`  and  `make test`.
# Both create .venv with python3 if it is missing and install the project into it.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= embedded
JOBS ?= 2
PY := $(VENV)/bin/python
STAMP := $(VENV)/.crossgap-installed

.PHONY: book test install browser lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

## Build the book on a profile (embedded = offline CPU default; smoke; paper = GPU + real weights/datasets).
book: $(STAMP)
	$(PY) -m crossgap_lib.book build --profile $(PROFILE) --jobs $(JOBS)

## Run the test suite (includes a smoke-profile build of the whole book and a headless-browser check).
test: $(STAMP) browser
	$(PY) -m pytest -q

## Debian's chromium for the browser test of the built book (needs root + apt; skipped quietly otherwise).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: the browser check of the book will be skipped"; }

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

clean:
	rm -rf _build book/_executed
