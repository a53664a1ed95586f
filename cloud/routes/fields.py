"""Patterns the API's request bodies share."""

EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
SLUG = r"^[a-z0-9][a-z0-9_-]{0,31}$"
DEVICE_ID = r"^[0-9a-f]{12}$"
