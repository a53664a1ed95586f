"""Nightlink: offline-first bedside health runtime.

The top-level folders of the repository are mapped into this namespace:
``nightlink.shared`` is ``shared/``, ``nightlink.device`` is ``device/`` and so on
(see ``[tool.setuptools] package-dir`` in pyproject.toml).
"""

__version__ = "0.1.0"
