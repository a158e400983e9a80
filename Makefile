# Two commands do all set-up on a fresh machine (Python 3.11, a C compiler):
#   make serve   install into .venv, then run the service (embedded broker, no external Kafka)
#   make test    install into .venv, then lint and run every test (unit + integration)
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: serve test bench install clean

$(STAMP): pyproject.toml setup.py ext/_kernels.pyx
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip "setuptools>=68" wheel "Cython>=3.0"
	$(VENV)/bin/pip install --quiet --no-build-isolation -e ".[test,bench]"
	$(VENV)/bin/python -c "import ext; print('kernels:', ext.IMPLEMENTATION)"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/orderstream serve --config orderstream.toml $(ARGS)

# pytest exits 5 when it collected nothing: that is a failure here, never a pass.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(VENV)/bin/python -m bench.idle
	$(VENV)/bin/python -m bench.kernels
	$(VENV)/bin/python -m bench.stages --orders 100000
	$(VENV)/bin/python -m bench.reserve
	$(VENV)/bin/python -m bench.state_events
	$(VENV)/bin/python -m bench.flood --spawn --orders 100000 --vip-rate 0.02
	$(VENV)/bin/python -m bench.flood --spawn --orders 60000 --rate 2400 --batch 100 --vip-rate 0.02
	$(VENV)/bin/python -m bench.timers
	$(VENV)/bin/python -m bench.exports --rows 100000
	$(VENV)/bin/python -m bench.door --seconds 30  # needs Debian's wrk

clean:
	rm -rf $(VENV) build *.egg-info ext/*.so ext/_kernels.c
