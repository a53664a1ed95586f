"""Helpers shared by the tests: real servers, what real clients send."""
