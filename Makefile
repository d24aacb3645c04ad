# Quick start:  make serve   (creates .venv on first use, then runs the server on 127.0.0.1:8000)
#               make test    (creates .venv with the test extras on first use, then runs every test)
# Pass server flags with ARGS, e.g.  make serve ARGS="--host 0.0.0.0 --engine espeak"

PYTHON ?= python3
VENV   ?= .venv
# torch first, pinned: on machines with a local CPU wheel pip takes it; elsewhere set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu (or a CUDA index) to choose the build.
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
PIP    := $(VENV)/bin/python -m pip
ARGS   ?=
PYTEST_ARGS ?= -q

.PHONY: serve test venv test-venv browser haproxy clean

serve: $(VENV)/.deps
	$(VENV)/bin/realtime-tts serve $(ARGS)

test: $(VENV)/.test-deps browser haproxy
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

venv: $(VENV)/.deps
test-venv: $(VENV)/.test-deps

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(VENV)/bin/python
	$(PIP) install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	touch $@

$(VENV)/.deps: pyproject.toml $(VENV)/.torch
	$(PIP) install -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml $(VENV)/.deps
	$(PIP) install -e '.[test,cluster]'
	touch $@

# The browser test drives Debian's chromium; install it when we can (root + apt), else the
# test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "chromium not found and cannot install it here: the browser test will be skipped"; fi; }

# The HAProxy test (tests/cluster/test_haproxy.py) drives Debian's haproxy in front of local
# servers; install it the same way, else that test skips and says why.
haproxy:
	@command -v haproxy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian haproxy for the HAProxy test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null) \
	      || echo "could not install haproxy: the HAProxy test will be skipped"; \
	  else echo "haproxy not found and cannot install it here: the HAProxy test will be skipped"; fi; }

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
