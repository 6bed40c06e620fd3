# The two commands of the README: `make run` and `make test`. Both bootstrap everything
# they need on a fresh Debian 12 machine: the virtualenv, and for the tests the Debian peers.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install run test lint typecheck peers unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# `make run ARGS='--port 9000 --tls-cert c.pem --tls-key k.pem'` passes ARGS to `serve`;
# IMAGEDEPOT_HOST, IMAGEDEPOT_PORT, IMAGEDEPOT_REGISTRY_PORT (and every other setting)
# come through the environment or the make command line.
ARGS ?=
install: $(STAMP)

run: $(STAMP)
	$(BIN)/imagedepot serve $(ARGS)

peers:
	@missing=""; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v htpasswd >/dev/null || missing="$$missing apache2-utils"; \
	command -v qemu-img >/dev/null || missing="$$missing qemu-utils"; \
	command -v containerd >/dev/null || missing="$$missing containerd"; \
	command -v jq >/dev/null || missing="$$missing jq"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	[ -x /usr/lib/postgresql/15/bin/initdb ] || missing="$$missing postgresql-15"; \
	command -v radosgw >/dev/null || missing="$$missing ceph-mon ceph-osd radosgw ceph-common"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian peers:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check imagedepot tests bench
	$(BIN)/ruff format --check imagedepot tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) peers lint typecheck
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit

bench: $(STAMP) peers
	$(BIN)/python bench/build_cache.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
