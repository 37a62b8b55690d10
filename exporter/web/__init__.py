"""The exporter's HTTP side: the server (``server``), the endpoints (``app``), the
landing page (``landing`` and ``templates/``) and the server's own metrics (``stats``).
"""

from exporter.web.app import Monitored, Request, Response, WebApp, Workers, build_web_app
from exporter.web.server import Limits, WebServer, parse_listen_address, raise_open_files_limit

__all__ = [
    "Limits",
    "Monitored",
    "Request",
    "Response",
    "WebApp",
    "WebServer",
    "Workers",
    "build_web_app",
    "parse_listen_address",
    "raise_open_files_limit",
]
