"""A package, so that pytest imports tests/experiments/conftest.py as experiments.conftest: outside a
package it would be imported as the top-level module "conftest" and replace tests/conftest.py, whose
functions other test modules import with `from conftest import ...`."""
