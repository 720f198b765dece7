# The two commands of the README:
#   make demo   set up .venv and start a demo site node with sample data
#               (make demo PORT=8800 when the default port is taken)
#   make test   set up .venv and run lint and the whole test suite
# Everything installs itself, at the versions the suite last passed on:
# Python packages from requirements.lock (hashes checked) into .venv, the hub's
# proxy (configurable-http-proxy) from .ci/node/package-lock.json into
# .venv/node, Debian packages the tests need (.ci/apt-packages.txt, versions
# recorded) when running as root.
# `make lock` refreshes all three records after a change of pyproject.toml;
# `make upgrade` moves every package to its newest release. Both are
# deliberate commits.

VENV   := .venv
PY     := $(VENV)/bin/python
LOCK   := requirements.lock
STAMP  := $(VENV)/.installed
COMPILE := $(VENV)/bin/pip-compile --quiet --all-extras --generate-hashes --allow-unsafe \
	--strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
	--output-file $(LOCK) pyproject.toml

.PHONY: demo test lint setup system bench clean lock upgrade

setup: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml .ci/apt-packages.txt .ci/node/package-lock.json
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(VENV)/bin/pip-sync -q $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	mkdir -p $(VENV)/node
	cp .ci/node/package.json .ci/node/package-lock.json $(VENV)/node/
	npm ci --silent --no-audit --no-fund --prefix $(VENV)/node
	ln -sf ../node/node_modules/.bin/configurable-http-proxy $(VENV)/bin/configurable-http-proxy
	bash .ci/install-system-packages
	touch $(STAMP)

demo: setup
	$(VENV)/bin/insitu demo $(if $(PORT),--port $(PORT))

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash .ci/typecheck

test: lint
	$(PY) -m pytest

bench: setup
	$(PY) bench/run.py

# Record the environment again after pyproject.toml changed: pins that still
# satisfy it stay; the venv, the images' files and the apt/npm records follow.
# pip-compile comes from the current lock; no `make setup` first, whose `pip check`
# would refuse a venv that the edited pyproject.toml no longer matches.
lock:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(COMPILE)
	$(MAKE) setup
	$(PY) docker/lock.py
	cd .ci/node && npm install --package-lock-only --silent --no-audit --no-fund
	bash .ci/install-system-packages --record

upgrade:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(COMPILE) --upgrade
	$(MAKE) lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
