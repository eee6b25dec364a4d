# Two entry points for a fresh machine with Python 3.11 and pip:
#   make run   - set up .venv and run the main job (the default design-space sweep)
#   make test  - set up .venv (and headless Chromium for the report test) and run all tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium
# pytest worker processes (pytest-xdist). From a fresh clone the suite mostly compiles Numba
# kernels, one process at a time: on a 2-core Zen 1 guest 20.0 min serially, 14.6 min with 2
# workers (each holds about 1.5 GB). TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2

.PHONY: run test bench report-default report-area chromium yosys clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job: the embedded default sweep -> runs/default.sqlite and reports/default/.
run: $(STAMP)
	$(BIN)/nmsim sweep

# Regenerate the committed reference report from scratch (a fresh results database).
report-default: $(STAMP)
	rm -f runs/default.sqlite runs/default.sqlite-wal runs/default.sqlite-shm
	$(BIN)/nmsim sweep --quiet

# Debian's chromium renders the sweep report's HTML page in its test; installed when missing
# (needs root and the Debian package registry; the test skips with a reason otherwise).
chromium:
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "note: $(CHROMIUM) missing and not installable here; the HTML test will skip"; }

# Debian's yosys synthesizes the decoder/mux circuits (accel_sim/rtl); installed when missing
# (needs root and the Debian package registry; the synthesis tests skip with a reason otherwise).
yosys:
	@command -v yosys >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq yosys; } \
	  || echo "note: yosys missing and not installable here; the synthesis tests will skip"; }

# Synthesize every decoder and operand mux of the default sweep -> reports/area/synthesis.*,
# then the per-preset overheads and anchors -> reports/area/{overheads,anchors}.md.
report-area: $(STAMP) yosys
	$(BIN)/python -m accel_sim.rtl.synth --out reports/area
	$(BIN)/python scripts/area_overheads.py --before reports/area/overheads_before.json \
	  --out reports/area

test: $(STAMP) chromium yosys
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

bench: $(STAMP)
	$(BIN)/nmsim bench formats

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
