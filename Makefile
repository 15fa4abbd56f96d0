# gptbook: the two set-up commands of README.md are `make book` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: book test export check-export execute stamp style data browser clean

$(PY):
	python3 -m venv $(VENV)

# torch 2.13.0 first: pip takes the CPU build from this machine's disk; a bare range would pull CUDA.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.0"
	touch $@

# The rest with uv (from PyPI) when it installs: it resolves and downloads in parallel, minutes
# faster than pip; torch is already there, so nothing pulls a CUDA build. pip is the fallback.
TEST_EXTRAS := .[book,test]
INSTALL = { $(PIP) install -q uv && $(VENV)/bin/uv pip install -q --python $(PY) -e "$(1)"; } || $(PIP) install -q -e "$(1)"

$(VENV)/.book: pyproject.toml $(VENV)/.torch
	$(call INSTALL,.[book])
	touch $@

# the test extras include the book's, so this install also satisfies .book
$(VENV)/.test: pyproject.toml $(VENV)/.torch
	$(call INSTALL,$(TEST_EXTRAS))
	touch $@ $(VENV)/.book

## The web book: _build/html/index.html, warnings are errors.
book: $(VENV)/.book
	$(PY) tools/fetch_mathjax.py
	$(VENV)/bin/jupyter-book build -W -n --keep-going .

## Every test: the exported package is in sync, unit tests, every notebook under nbval, the built
## book in a real headless browser.
test: $(VENV)/.test browser
	$(PY) tools/export.py --check
	$(MAKE) book
	TQDM_DISABLE=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 PYTHONHASHSEED=0 GPTBOOK_ONLINE=0 \
	  $(PY) -m pytest -n 2 --dist loadscope --nbval-lax --nbval-current-env -p no:randomly \
	  tests chapters

## Debian's chromium and chromedriver, where tests/test_browser.py looks for them (apt-get; root or sudo).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	command -v apt-get >/dev/null || { echo "make browser: install chromium and chromedriver as /usr/bin/chromium and /usr/bin/chromedriver" >&2; exit 1; }; \
	sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null

export: $(VENV)/.test
	$(PY) tools/export.py

check-export: $(VENV)/.test
	$(PY) tools/export.py --check

## Re-run notebooks and keep their outputs: make execute NB="chapters/01_tokenization.ipynb"
NB ?= $(sort $(wildcard chapters/*.ipynb))
execute: $(VENV)/.test
	$(PY) tools/export.py
	$(PY) tools/nbtool.py run $(NB)

stamp:
	python3 tools/nbtool.py stamp

## What the readability tests would reject, notebook by notebook (tools/nbstyle.py; format/hide fix some)
style: $(VENV)/.test
	$(PY) tools/nbstyle.py check

data:
	$(PY) tools/prepare_data.py

clean:
	rm -rf _build
