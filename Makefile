# reelhouse: `make run` and `make test` are the whole set-up on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# npm ci writes node_modules/.package-lock.json; older than the lockfile means stale.
NPM_STAMP := node_modules/.package-lock.json

.PHONY: run test test-fast lint bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Front-end packages for the web UI (htmx, hls.js, uPlot, Swagger UI, ReDoc; axe-core for the
# browser tests), from the committed lockfile; .npmrc turns install scripts off.
$(NPM_STAMP): package.json package-lock.json
	npm ci
	@touch $(NPM_STAMP)

# Debian packages reelhouse runs (ffmpeg/ffprobe, aria2c for HLS fragments, npm for the web UI's
# packages) or tests with (promtool from prometheus, chromium + chromium-driver for the browser
# tests, wrk for bench/web.py).
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v aria2c >/dev/null || missing="$$missing aria2"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v nginx >/dev/null || missing="$$missing nginx"; \
	[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || missing="$$missing libnginx-mod-rtmp"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

run: system-deps $(STAMP) $(NPM_STAMP)
	$(VENV)/bin/reelhouse serve

# Lint, format, types and the import contracts (core never imports a domain, domains never import
# each other, nothing imports the CLI entry point) fail the build before any test runs.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Two xdist workers: the machine has two cores, and most tests wait on subprocesses. worksteal:
# an idle worker takes queued tests from the busy one, so a few long tests do not make the tail.
test: system-deps $(STAMP) $(NPM_STAMP) lint
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist worksteal --durations=25

test-fast: $(STAMP) $(NPM_STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: system-deps $(STAMP)
	$(PY) bench/jobs.py
	$(PY) bench/ladder.py
	$(PY) bench/ladder_job.py
	$(PY) bench/distributed.py
	$(PY) bench/download.py
	$(PY) bench/chat.py
	$(PY) bench/web.py
	$(PY) bench/startup.py

clean:
	rm -rf $(VENV) data .pytest_cache node_modules test-artifacts
