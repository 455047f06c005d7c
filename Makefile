# Two entry points, both runnable on a fresh Debian machine as root:
#   make run   - install what is missing, then start rrdcached and mondemand-server on examples/routes.ini (data in var/)
#   make test  - install what is missing, then run ruff and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PACKAGES := build-essential pkg-config librrd-dev rrdtool rrdcached python3-venv chromium chromium-driver \
                nodejs prometheus carbon-c-relay graphite-carbon
# npm packages the tests drive (a real statsd client from node), installed once under the venv.
NPM_PACKAGES := hot-shots@10
STAMP  := $(VENV)/.installed

.PHONY: run test setup system-packages lint bench clean

run: setup
	BIN=$(BIN) examples/dev-server.sh

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest

setup: $(STAMP)

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# Debian's nodejs comes without npm; NodeSource's carries its own (and conflicts with Debian's npm).
	@command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm

$(STAMP): pyproject.toml mondemand/_speedups.c $(wildcard backends/contrib/*/pyproject.toml) | system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,rrd,whisper,web,alerts]'
	for d in backends/contrib/*/; do [ -f "$$d/pyproject.toml" ] && $(BIN)/pip install -q -e "$$d"; done; true
	npm install --prefix $(VENV)/npm --no-audit --no-fund --omit=optional --silent $(NPM_PACKAGES)
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/bench_codec.py

clean:
	rm -rf $(VENV) build *.egg-info mondemand/*.so
