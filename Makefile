# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEERS := $(VENV)/.peers-installed

.PHONY: demo test lint bench bench-quick latency clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	# CPU build of torch first, so botorch does not pull a multi-GB CUDA build.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

# The peer tools (Optuna, DEHB) and LightGBM for the RegMix baseline: the tests and the
# benchmark use them; the service and the demo do not.
$(PEERS): $(STAMP)
	$(BIN)/pip install -e '.[dev,peers]'
	touch $(PEERS)

demo: $(STAMP)
	$(BIN)/mfms demo

# The dashboard's browser test drives Debian's Chromium (never a downloaded browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	    echo "could not install chromium: the dashboard browser test will be skipped"; \
	  else echo "chromium is not installed (needs root and apt-get): the dashboard browser test will be skipped"; fi; }

# Two test processes: the suite is sized for a 2-core machine (its load and fault tests
# share it with the servers and workers they start), and two halve its wall time there.
TEST_PROCESSES ?= 2

test: $(PEERS) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_PROCESSES)

bench-quick: $(PEERS)
	$(BIN)/mfms bench --suite standard --quick --json bench/results/quick.json \
	  --report bench/results/quick.md --plot bench/results/quick.png

bench: $(PEERS)
	$(BIN)/mfms bench --suite standard --json bench/results/standard.json \
	  --report bench/results/standard.md --plot bench/results/standard.png

latency: $(STAMP)
	$(BIN)/python bench/latency.py --json bench/results/latency.json

clean:
	rm -rf $(VENV) build *.egg-info
