# One-command set-up and run targets. Each creates the virtual environment on
# first use: torch==2.13.0 goes in first so the project's torch range resolves
# to it and pip never fetches a CUDA build.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo drill test browser lint typecheck check bench bench-venv bench-scan bench-env bench-ledger bench-sentinel clean

venv: $(STAMP)

# An editable install compiles nothing: compileall writes trainguard's bytecode, or
# every command would compile it at start-up (and, under PYTHONDONTWRITEBYTECODE,
# never write it back).
$(STAMP): pyproject.toml setup.py src/trainguard/ledger/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m compileall -q src
	touch $(STAMP)

demo: venv
	$(VENV)/bin/trainguard demo

# Every drill of the incident on real 2-rank jobs (a few minutes on 2 CPUs).
drill: venv
	$(VENV)/bin/trainguard drill

test: venv browser
	$(PY) -m pytest -q

# The dashboard's browser tests drive Debian's Chromium (never a downloaded browser):
# installed from the OS packages when missing and this is root with apt-get.
browser:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
		&& { apt-get install -y -q chromium chromium-driver >/dev/null \
		     || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; }; } \
		|| echo "make: Debian chromium is not installed; the browser tests will fail" >&2

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: venv
	$(VENV)/bin/mypy

check: lint typecheck test

bench: bench-scan bench-ledger

# The peer scanners (picklescan, modelscan, fickling, modelaudit) live in their
# own environment so they never touch the project's; torch==2.13.0 goes in first
# and a constraints file pins it, so no peer can pull another torch build. One
# install per peer: a peer that cannot install is reported by the benchmark as
# "not installed"; it does not block the others.
PEERS_VENV  ?= .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed

bench-venv: $(PEERS_STAMP)

$(PEERS_STAMP): benchmarks/peers-requirements.txt benchmarks/peers-constraints.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install -q torch==2.13.0
	for req in $$(grep -v '^#' benchmarks/peers-requirements.txt); do \
		$(PEERS_VENV)/bin/python -m pip install -q -c benchmarks/peers-constraints.txt "$$req" \
			|| echo "bench-venv: could not install $$req" >&2; \
	done
	touch $(PEERS_STAMP)

bench-scan: venv bench-venv
	$(PY) benchmarks/scan_peers.py


# env verify against the two-thread SHA-256 limit and AIDE on the issue's
# environment: a venv of its own holding torch + numpy + transformers and their
# dependencies only (not the project's dev venv, which holds far more).
# torch==2.13.0 goes in first from the local wheel and stays pinned. AIDE comes
# from the OS packages when it can be installed (root and apt-get); otherwise
# the benchmark says so.
BENCH_ENV_VENV  ?= .venv-bench-env
BENCH_ENV_STAMP := $(BENCH_ENV_VENV)/.installed

$(BENCH_ENV_STAMP): benchmarks/env-bench-requirements.txt
	$(PYTHON) -m venv $(BENCH_ENV_VENV)
	$(BENCH_ENV_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_ENV_VENV)/bin/python -m pip install -q torch==2.13.0
	$(BENCH_ENV_VENV)/bin/python -m pip install -q -r benchmarks/env-bench-requirements.txt \
		-c benchmarks/peers-constraints.txt
	touch $(BENCH_ENV_STAMP)

bench-env: venv $(BENCH_ENV_STAMP)
	@command -v aide >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
		&& apt-get install -y -q aide >/dev/null 2>&1; } || echo "bench-env: AIDE not installable" >&2
	$(PY) benchmarks/env_verify.py --python $(BENCH_ENV_VENV)/bin/python

# The ledger at cluster scale (SQLite and PostgreSQL): append, verify and
# blast-radius on a synthetic year of a 10,000-GPU cluster. LEDGER_SCALE=0.1
# for a quick run; PostgreSQL must listen on 127.0.0.1:5432 (see .ci/run).
LEDGER_SCALE ?= 1

bench-ledger: venv
	$(PY) benchmarks/ledger.py --scale $(LEDGER_SCALE) --json benchmarks/results/ledger.json

# The sentinel's overhead: a small GPT on CPU, 1 and 2 gloo ranks, every check at
# its defaults vs no sentinel in the same run, plus each check's own cost.
bench-sentinel: venv
	$(PY) benchmarks/sentinel_overhead.py --ranks 1 2

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info
