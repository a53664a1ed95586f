"""Operator and developer tools: simulate, train, device tooling, bench."""
