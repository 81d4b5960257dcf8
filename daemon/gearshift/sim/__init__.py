"""Sim: a simulated PaaS and providers, for `simulate`, `demo` and the tests."""
