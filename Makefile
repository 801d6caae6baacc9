# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-quick latency clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	# CPU build of torch first, so botorch does not pull a multi-GB CUDA build.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

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

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench-quick: $(STAMP)
	$(BIN)/mfms bench --quick --json bench/results/quick.json --plot bench/results/quick.png

bench: $(STAMP)
	$(BIN)/mfms bench --json bench/results/full.json --plot bench/results/full.png

latency: $(STAMP)
	$(BIN)/python bench/latency.py --json bench/results/latency.json

clean:
	rm -rf $(VENV) build *.egg-info
