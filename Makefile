# Everything installs into .venv/ from uv.lock; only python3 and make are needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP := $(VENV)/.synced

.PHONY: install demo screenshot test lint bench clean

install: $(STAMP)

$(STAMP): uv.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	# --inexact keeps uv itself in the venv; --frozen installs exactly the lock;
	# compiled bytecode makes every `dialer` start faster (PYTHONDONTWRITEBYTECODE may be set).
	UV_PROJECT_ENVIRONMENT=$(VENV) UV_COMPILE_BYTECODE=1 $(BIN)/uv sync --frozen --inexact --quiet
	touch $(STAMP)

demo: $(STAMP)
	rm -f out/demo.report.csv out/demo.sqlite*
	# 75: rows wait for their hours (the law's 08:00-21:00 holds for the demo's US numbers too).
	$(BIN)/dialer run campaigns/demo.toml --sandbox || test $$? -eq 75
	$(BIN)/dialer report campaigns/demo.toml --out out/demo.report.html

# The README's picture of a campaign page (needs Debian's chromium: apt-get install -y chromium):
# 300 leads dialed against the sandbox with its telephony on, every call followed to its end.
screenshot: $(STAMP)
	$(BIN)/python tools/page_screenshot.py docs/campaign-page.png

test: $(STAMP) lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check dialer tests bench
	$(BIN)/ruff format --check dialer tests bench
	$(BIN)/mypy dialer tests bench

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) out
