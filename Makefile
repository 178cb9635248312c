# Every target sets up what it needs: a fresh machine needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,embedded,tools,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/kpd run --config config/dev.yaml

# From Debian, installed when we can (CI runs as root): systemd-analyze for the unit-file
# tests, kcat for the benchmark's C ceiling. Without them those tests/rows say they skipped.
SYSTEM_DEPS := .venv/.system-deps
$(SYSTEM_DEPS): $(STAMP)
	@missing=""; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v kcat >/dev/null 2>&1 || missing="$$missing kcat"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } \
	      || echo "note: apt-get could not install$$missing"; \
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
	rm -rf $(VENV) build *.egg-info
