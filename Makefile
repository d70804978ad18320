# gpushell: `make demo` shows the real thing, `make test` runs every test.
# Both install what they need (Debian packages, a virtualenv) by themselves.

SHELL        := /bin/bash
PYTHON       := /usr/bin/python3
VENV         := .venv
PREFIX       := /usr/local
BINDIR       := $(PREFIX)/bin
MANDIR       := $(PREFIX)/share/man
APT_PACKAGES := lxc lxc-templates python3-lxc lxc-dev iptables nftables openssh-server openssh-client \
                debootstrap uidmap tmux sudo python3-yaml python3-psutil python3-colorama \
                python3-venv python3-pip python3-setuptools iproute2 groff-base man-db btrfs-progs
DEV_PACKAGES := pytest pexpect hypothesis ruff mypy types-PyYAML types-psutil
STAMP        := .make

.PHONY: all deps install uninstall venv test unit integration lint demo demo-clean bench clean

all: install

$(STAMP):
	mkdir -p $(STAMP)

# Debian packages: checked each time (cheap), installed only when one is missing.
deps: | $(STAMP)
	@missing=$$(dpkg-query -W -f='$${Package} $${Status}\n' $(APT_PACKAGES) 2>/dev/null \
	    | awk '$$NF != "installed" {print $$1}'; \
	    for p in $(APT_PACKAGES); do dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# System-wide for Debian's python3, so the login shell runs as `python3 -I`
# for every user; the entry points get that shebang.
install: deps
	$(PYTHON) -m pip install --quiet --no-deps --no-build-isolation --break-system-packages \
	    --root-user-action=ignore --no-warn-script-location .
	$(PYTHON) -I -m gpushell.system.entrypoints $(BINDIR)
	@# Optional: NVML's Python bindings for `gpus` and `kill-gpu-process`; without
	@# them (or without a driver) those say so and everything else works.
	$(PYTHON) -m pip install --quiet --break-system-packages --root-user-action=ignore nvidia-ml-py \
	    || echo "warning: nvidia-ml-py not installed; gpushell gpus will report no NVIDIA driver"
	install -d $(MANDIR)/man1 $(MANDIR)/man5 $(MANDIR)/man8
	install -m 0644 man/gpushell.1 $(MANDIR)/man1/
	install -m 0644 man/gpushell.yaml.5 $(MANDIR)/man5/
	install -m 0644 man/gpushell-admin.8 $(MANDIR)/man8/
	install -D -m 0644 etc/gpushell-apply.service /etc/systemd/system/gpushell-apply.service
	install -D -m 0644 etc/gpushell-tick.service /etc/systemd/system/gpushell-tick.service
	install -D -m 0644 etc/gpushell-tick.timer /etc/systemd/system/gpushell-tick.timer
	rm -rf build gpushell.egg-info

uninstall:
	$(PYTHON) -m pip uninstall --yes --break-system-packages --root-user-action=ignore gpushell
	rm -f $(MANDIR)/man1/gpushell.1 $(MANDIR)/man5/gpushell.yaml.5 $(MANDIR)/man8/gpushell-admin.8
	rm -f /etc/systemd/system/gpushell-apply.service
	rm -f /etc/systemd/system/gpushell-tick.service /etc/systemd/system/gpushell-tick.timer

$(VENV)/.ready: Makefile | deps
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install --quiet $(DEV_PACKAGES)
	touch $@

venv: $(VENV)/.ready

# Unit tests first (seconds: every folder but integration/, and the
# contract suite against the fake backend), then the integration tests on
# real LXC, iptables and sshd (the contract suite against LXC with them).
# `pytest` exits 5 when it collected nothing: that fails.
PYTEST = $(VENV)/bin/python -m pytest -q -p no:cacheprovider
UNIT = $(PYTEST) tests --ignore=tests/integration -m "not integration"
INTEGRATION = $(PYTEST) tests/integration tests/contract -m integration

test: install venv
	$(UNIT)
	$(INTEGRATION)

unit: venv
	$(UNIT)

integration: install venv
	$(INTEGRATION)

lint: venv
	$(VENV)/bin/ruff check gpushell tests bench
	$(VENV)/bin/ruff format --check gpushell tests bench
	$(VENV)/bin/mypy

demo: install
	$(PYTHON) -I -m gpushell.admin.demo

demo-clean:
	$(PYTHON) -I -m gpushell.admin.demo --clean

bench: install venv
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(STAMP) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
