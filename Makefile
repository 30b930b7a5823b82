# greenmon: two commands to know, `make demo` and `make test`.
# Both create .venv, install the package with its test extras, and install the Debian
# packages mosquitto, influxdb, chromium and fonts-wqy-zenhei when they are missing (needs
# root or sudo).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
APT    := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)
PYTEST_ARGS ?=

.PHONY: test demo lint typecheck pytest install debs clean

test: install lint typecheck pytest

# The whole chain on the local services: a fleet built on purpose, last year and this year to
# date, a live week through MQTT with faults while ingest, aggregate --follow and alerts watch
# run, then alerts, screening, classes, HTML reports, the Grafana provisioning tree, and the
# summary against the ground truth (DEMO_ARGS e.g. --enterprises 100 --days 3).
DEMO_ARGS ?=
demo: install
	$(VENV)/bin/greenmon services up
	$(VENV)/bin/greenmon demo $(DEMO_ARGS)

debs:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ] \
	   || ! command -v influxd >/dev/null 2>&1; then \
	  echo "installing Debian packages mosquitto and influxdb"; \
	  DEBIAN_FRONTEND=noninteractive $(APT) update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq mosquitto mosquitto-clients influxdb; \
	fi
	@# headless Chromium renders the HTML reports in the tests; a CJK font makes them legible
	@if ! command -v chromium >/dev/null 2>&1 \
	   || [ ! -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ]; then \
	  echo "installing Debian packages chromium and fonts-wqy-zenhei"; \
	  DEBIAN_FRONTEND=noninteractive $(APT) update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq chromium fonts-wqy-zenhei; \
	fi

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "setuptools>=77" wheel
	$(PIP) install -q ".[test]"
	touch $@

# The package is installed as a regular (non-editable) install, refreshed on every run, so
# the tests exercise exactly what `pip install .` gives a user.
install: debs $(VENV)/.deps
	$(PIP) install -q --no-deps --no-build-isolation --force-reinstall . 2>&1 \
	  | grep -v -i -E "warning|^ *$$|!!|\*\*\*|setuptools|packag|^ +[A-Za-z\[(]" || true

lint: $(VENV)/.deps
	$(VENV)/bin/ruff check core ingest rules aggregator dashboards simulators deploy demo tests
	$(VENV)/bin/ruff format --check core ingest rules aggregator dashboards simulators deploy demo tests

# mypy checks the installed package (the source folders are mapped into `greenmon`).
typecheck: install
	cd $(VENV) && bin/mypy -p greenmon

pytest: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf build dist *.egg-info $(VENV)
