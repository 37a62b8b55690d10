"""Token health exporter: keeps OAuth 2.0 client-credentials tokens healthy and visible."""

from exporter import buildinfo

#: From pyproject.toml through the package metadata (see exporter/buildinfo.py).
__version__ = buildinfo.version()
