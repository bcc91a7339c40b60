# gbgw — make run | make test | make bench | make lint
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?=
# Debian packages the interop tests and benchmarks drive (installed when run as root).
PEERS_DEB := sip-tester ffmpeg tshark kamailio chromium chromium-driver

.PHONY: run test bench lint venv peers clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: venv
	$(BIN)/gbgw serve $(if $(CONFIG),-c $(CONFIG))

peers:
	@missing=""; \
	for p in $(PEERS_DEB); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian peers:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian peers:$$missing (run 'make test' as root, or: sudo apt-get install$$missing)"; \
	  fi; \
	fi

test: venv peers
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: venv peers
	$(BIN)/python -m bench

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict sip media gateway/manscdp
	$(BIN)/mypy sip media gateway

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .hypothesis
