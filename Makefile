# reelhouse: `make run` and `make test` are the whole set-up on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := ffmpeg prometheus

.PHONY: run test test-fast bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages reelhouse runs (ffmpeg/ffprobe) or tests with (promtool from prometheus).
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

run: system-deps $(STAMP)
	$(VENV)/bin/reelhouse serve

test: system-deps $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: system-deps $(STAMP)
	$(PY) bench/jobs.py
	$(PY) bench/ladder.py
	$(PY) bench/ladder_job.py
	$(PY) bench/download.py
	$(PY) bench/chat.py

clean:
	rm -rf $(VENV) data .pytest_cache
