# Every target sets up what it needs: a fresh machine needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench bench-quick clean

# kpd-client (clients/python) is not on PyPI: it is installed from the tree in the same pip
# call, which is what satisfies the daemon's kpd-client==<version> dependency.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e clients/python -e '.[test,embedded,tools,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/kpd run --config config/dev.yaml

# From Debian, installed when we can (CI runs as root): systemd-analyze for the unit-file
# tests; kcat (the benchmark's C ceiling) and rsyslog with omkafka (the benchmark's shell-path
# contender); Go and sarama (the Go Kafka client, with its dependencies under /usr/share/gocode)
# for the listener's sarama test, which builds its program offline in GOPATH mode. Without
# them those tests/rows say they skipped. rsyslog must never start as the
# system's logger here: the benchmark runs its own rsyslogd in the foreground with its own
# config, so a policy-rc.d that refuses every service start (exit 101, see invoke-rc.d(8))
# replaces any other during the install (the old one is put back afterwards).
SYSTEM_DEPS := .venv/.system-deps
POLICY_RC := /usr/sbin/policy-rc.d
$(SYSTEM_DEPS): $(STAMP) Makefile
	@missing=""; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v kcat >/dev/null 2>&1 || missing="$$missing kcat"; \
	command -v rsyslogd >/dev/null 2>&1 || missing="$$missing rsyslog"; \
	dpkg-query -W -f='$${Status}' rsyslog-kafka 2>/dev/null | grep -q "ok installed" \
	  || missing="$$missing rsyslog-kafka"; \
	command -v go >/dev/null 2>&1 || missing="$$missing golang-go"; \
	[ -d /usr/share/gocode/src/github.com/Shopify/sarama ] \
	  || missing="$$missing golang-github-shopify-sarama-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    saved=""; \
	    if [ -e $(POLICY_RC) ]; then saved=$(POLICY_RC).kpd-saved; mv $(POLICY_RC) $$saved; fi; \
	    printf '#!/bin/sh\nexit 101\n' > $(POLICY_RC); chmod 755 $(POLICY_RC); \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends $$missing; } \
	      || echo "note: apt-get could not install$$missing"; \
	    rm -f $(POLICY_RC); if [ -n "$$saved" ]; then mv $$saved $(POLICY_RC); fi; \
	  else echo "note: not installed:$$missing (their tests and bench rows will say skipped)"; fi; \
	fi
	touch $(SYSTEM_DEPS)

test: $(STAMP) $(SYSTEM_DEPS)
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile

bench: $(STAMP) $(SYSTEM_DEPS)
	$(BIN)/python -m bench

bench-quick: $(STAMP) $(SYSTEM_DEPS)
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) build *.egg-info clients/python/build clients/python/*.egg-info
