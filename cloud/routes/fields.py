"""Patterns the API's request bodies share."""

# No spaces, no control characters (a NUL or a line break has no place in a mail header).
EMAIL = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"
SLUG = r"^[a-z0-9][a-z0-9_-]{0,31}$"
DEVICE_ID = r"^[0-9a-f]{12}$"
