# The two commands of the README:  make demo  and  make test.
# Each creates (or reuses) .venv/, installs the pinned set, provisions the offline cut-out
# model (checksum-verified) and warms slow first imports; nothing needs installing by hand.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_TARGETS := -t amazon-main -t walmart-main -t shopify-square -t ebay -t google-shopping -t etsy -t lifestyle

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	$(BIN)/product-studio models fetch --warm
	touch $(STAMP)

# `models fetch` again: a no-op (checksums only) unless the configured models changed since setup.
demo: $(STAMP)
	$(BIN)/product-studio models fetch --no-warm
	$(BIN)/product-studio examples demo-in
	@# Exit 1 means a variant fails its target's check: the table says which and why (the example
	@# photos are small web photos; Amazon refuses images with less than 500 px of real detail).
	$(BIN)/product-studio process demo-in/*.jpg $(DEMO_TARGETS) --out demo-out || test $$? -eq 1

# The browser test drives Debian's Chromium; install it when missing (root, or sudo).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium || \
	  ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

test: $(STAMP) $(CHROMIUM)
	$(BIN)/product-studio models fetch --no-warm
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo-in demo-out
