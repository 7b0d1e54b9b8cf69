"""Tillstream's tooling: the embedded development stack, `make run`, and the operators' CLI."""
