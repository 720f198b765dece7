# The two commands of the README:
#   make demo   set up .venv and start a demo site node with sample data
#   make test   set up .venv and run lint and the whole test suite
# Everything installs itself: Python packages into .venv, the hub's proxy
# (configurable-http-proxy) from npm into .venv/node, Debian packages the
# tests need (.ci/apt-packages.txt) when running as root.

VENV   := .venv
PY     := $(VENV)/bin/python
EXTRAS := dev,pacs,deface,torch
STAMP  := $(VENV)/.installed

.PHONY: demo test lint setup system bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml .ci/apt-packages.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node configurable-http-proxy@5
	ln -sf ../node/node_modules/.bin/configurable-http-proxy $(VENV)/bin/configurable-http-proxy
	bash .ci/install-system-packages
	touch $(STAMP)

demo: setup
	$(VENV)/bin/insitu demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash .ci/typecheck

test: lint
	$(PY) -m pytest

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
