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
# What `make deb` builds and checks the package with.
DEB_PACKAGES := debhelper dh-python python3-all python3-setuptools pybuild-plugin-pyproject lintian
# What the tests alone need: a headless browser for the status page's test, the
# cluster engines (Incus comes from backports on Debian 12: tests/integration/install-incus).
TEST_PACKAGES := chromium chromium-driver lxd
DEV_PACKAGES := pytest pexpect hypothesis ruff mypy types-PyYAML types-psutil selenium
STAMP        := .make

.PHONY: all deps deb-deps test-deps deb install uninstall venv test unit integration lint demo demo-clean bench clean

all: install

$(STAMP):
	mkdir -p $(STAMP)

# Debian packages: checked each time (cheap), installed only when one is missing.
define apt-ensure
	@missing=$$(dpkg-query -W -f='$${Package} $${Status}\n' $(1) 2>/dev/null \
	    | awk '$$NF != "installed" {print $$1}'; \
	    for p in $(1); do dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

deps: | $(STAMP)
	$(call apt-ensure,$(APT_PACKAGES))

deb-deps:
	$(call apt-ensure,$(DEB_PACKAGES))

test-deps:
	$(call apt-ensure,$(TEST_PACKAGES))
	tests/integration/install-incus

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
	install -m 0644 man/gpushell-admin.8 man/gpushell-helper.8 man/gpushell-driver-hook.8 $(MANDIR)/man8/
	install -D -m 0644 etc/gpushell-apply.service /etc/systemd/system/gpushell-apply.service
	install -D -m 0644 etc/gpushell-helper.service /etc/systemd/system/gpushell-helper.service
	install -D -m 0644 etc/gpushell-tick.service /etc/systemd/system/gpushell-tick.service
	install -D -m 0644 etc/gpushell-tick.timer /etc/systemd/system/gpushell-tick.timer
	install -D -m 0644 etc/gpushell-publish-gpus.service /etc/systemd/system/gpushell-publish-gpus.service
	install -D -m 0644 etc/gpushell-publish-gpus.timer /etc/systemd/system/gpushell-publish-gpus.timer
	rm -rf build/lib build/bdist.* gpushell.egg-info  # pip's; build/deb is make deb's
	# A running resident helper would go on answering with the code it started with.
	if [ -d /run/systemd/system ]; then systemctl daemon-reload; systemctl try-restart gpushell-helper.service; fi

uninstall:
	$(PYTHON) -m pip uninstall --yes --break-system-packages --root-user-action=ignore gpushell
	rm -f $(MANDIR)/man1/gpushell.1 $(MANDIR)/man5/gpushell.yaml.5 $(MANDIR)/man8/gpushell-admin.8
	rm -f $(MANDIR)/man8/gpushell-helper.8 $(MANDIR)/man8/gpushell-driver-hook.8
	rm -f /etc/systemd/system/gpushell-apply.service /etc/systemd/system/gpushell-helper.service
	rm -f /etc/systemd/system/gpushell-tick.service /etc/systemd/system/gpushell-tick.timer
	rm -f /etc/systemd/system/gpushell-publish-gpus.service /etc/systemd/system/gpushell-publish-gpus.timer

# The Debian package, for installing on a server (README: Install on a server).
# Version 0.1.0+git<commits>, so a package from a later commit upgrades one
# from an earlier; built with debhelper in a copy of the tree as git sees it
# (tracked and new files, never ignored ones), checked with lintian.
DEB_VERSION ?= $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' gpushell/__init__.py)+git$(shell git rev-list --count HEAD)
DEB_TREE = build/deb/gpushell-$(DEB_VERSION)
DEB_FILE = gpushell_$(DEB_VERSION)_all.deb

deb: deb-deps
	rm -rf build/deb
	mkdir -p $(DEB_TREE)
	git ls-files -z --cached --others --exclude-standard \
	    | tar --null --files-from=- --ignore-failed-read -cf - | tar -xf - -C $(DEB_TREE)
	$(PYTHON) -I debian/stamp-version $(DEB_VERSION) "$$(git log -1 --format=%aD)" \
	    "$$(git log -1 --format='%an <%ae>')" $(DEB_TREE)
	@# Debian's own python3 and tools only, whatever else is on this PATH.
	cd $(DEB_TREE) && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage --build=binary --no-sign
	cp build/deb/$(DEB_FILE) .
	lintian --info --display-info --fail-on error,warning $(DEB_FILE)

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

test: install venv test-deps
	$(UNIT)
	$(INTEGRATION)

unit: venv
	$(UNIT)

integration: install venv test-deps
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
	$(VENV)/bin/python bench/cluster.py

clean:
	rm -rf $(VENV) $(STAMP) build *.egg-info .pytest_cache .mypy_cache .ruff_cache gpushell_*.deb
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
