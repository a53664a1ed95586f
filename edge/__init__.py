"""Edge node (CPython on a Raspberry Pi or phone)."""
