# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
# Debian packages the tests use for real (sshd targets, the bwrap run sandbox, Chromium, setpriv);
# installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install install-test system-test-deps bench screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@

# galaxy-importer (the check Galaxy runs on every upload) and antsibull-changelog, apart: see requirements-galaxy.txt.
GALAXY_VENV := .venv-galaxy
$(GALAXY_VENV)/.installed: requirements-galaxy.txt
	$(PYTHON) -m venv $(GALAXY_VENV)
	$(GALAXY_VENV)/bin/pip install -q --upgrade pip
	$(GALAXY_VENV)/bin/pip install -q -r requirements-galaxy.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test $(GALAXY_VENV)/.installed system-test-deps

system-test-deps:
	@missing=""; \
	if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then missing="$$missing openssh-server openssh-client"; fi; \
	if ! command -v bwrap >/dev/null; then missing="$$missing bubblewrap"; fi; \
	if ! command -v redis-server >/dev/null; then missing="$$missing redis-server"; fi; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (the tests start real sshd targets and a Redis they can stop; every run executes in a bwrap sandbox)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing chromium (the console tests drive a real browser)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! command -v setpriv >/dev/null; then \
		echo "installing util-linux (setpriv: the start-up tests run the service as root without its file override)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq util-linux >/dev/null; \
	fi

run: install
	$(BIN)/python -m web migrate
	$(BIN)/python -m web serve --host $(HOST) --port $(PORT)

test: install-test
	$(BIN)/python -m pytest tests

# Retake the console screenshots the README shows (docs/console-*.png) with the browser tests.
screenshots: install-test
	CLOUDCRON_SCREENSHOTS_DIR=docs $(BIN)/python -m pytest tests/integration/test_console_browser.py -k watches_it_run

bench: install-test
	$(BIN)/python bench/bench_api.py
	$(BIN)/python bench/bench_dispatch.py
	$(BIN)/python bench/bench_runs.py
	$(BIN)/python bench/bench_collection.py
	$(BIN)/python bench/bench_burst.py

clean:
	rm -rf $(VENV) build
