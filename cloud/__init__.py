"""Cloud service."""
