"""Token health exporter: keeps OAuth 2.0 client-credentials tokens healthy and visible."""

__version__ = "0.1.0"
