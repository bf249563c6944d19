# The README's commands. Every target runs `setup` first, which is idempotent and takes seconds once
# the toolchain cache (outside the repo, see toolchain/) is warm.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export SOVCLOUD_HOME ?= $(HOME)/.cache/sovcloud
export PATH := $(SOVCLOUD_HOME)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup doctor lab lab-down lab-status test lint bench conformance

setup:
	$(PYTHON) -m toolchain setup

doctor:
	$(PYTHON) -m toolchain doctor

# Bring up the whole reference deployment on the embedded default target: the local lab.
lab: setup
	$(PY) -m lab up

lab-status:
	$(PY) -m lab status

lab-down:
	$(PY) -m lab down

# Run every test: lint gates, unit, tool-backed and lab integration tests.
test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m bench

# The Kubernetes conformance suite of the lab clusters' version against one lab site (needs `make lab`); builds
# the suite and its test images first. Every [Conformance] test takes hours: narrow it with ARGS, e.g.
#   make conformance ARGS="--focus sig-network"
conformance: setup
	$(PY) -m bench.conformance $(ARGS)
