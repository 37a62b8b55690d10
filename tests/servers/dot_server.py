"""django-oauth-toolkit as a second, unrelated authorization server.

``dot_server`` (session fixture) runs ``tests/servers/dot`` once per test run
with a fresh sqlite file in a temporary directory and two client-credentials
applications: ``exporter`` (the credential under test) and ``introspector``
(a resource server's own credential for RFC 7662). Its issuer is
``<base>/o``; it serves RFC 8414 metadata but no OpenID discovery, its token,
introspection and revocation endpoints, and ``/api/hello``, a protected API
that answers a revoked token with 401 ``invalid_token``.

django-oauth-toolkit is a test requirement (pyproject's ``test`` extra): the
fixture fails, never skips, when it is missing.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers._process import server_process

REPO = Path(__file__).resolve().parents[2]
ACCESS_TOKEN_TTL = 600


@dataclass(frozen=True)
class DotServer:
    base: str
    client_id: str
    client_secret: str
    introspector_id: str
    introspector_secret: str

    @property
    def issuer(self) -> str:
        return f"{self.base}/o"

    @property
    def token_endpoint(self) -> str:
        return f"{self.base}/o/token/"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.base}/o/introspect/"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.base}/o/revoke_token/"

    @property
    def api(self) -> str:
        return f"{self.base}/api/hello"


def require_django_oauth_toolkit() -> None:
    if importlib.util.find_spec("oauth2_provider") is None:
        pytest.fail("django-oauth-toolkit is needed for these tests; install the test extra: "
                    "pip install -e '.[test]'")


@contextmanager
def run_dot(d: Path, name: str, config: dict[str, object]) -> Iterator[str]:
    """Run one DOT process with ``config``; yield its base URL."""
    require_django_oauth_toolkit()
    config = {"secret_key": secrets.token_urlsafe(32), "database": str(d / "db.sqlite3"),
              "access_token_ttl": ACCESS_TOKEN_TTL, **config}
    (d / "config.json").write_text(json.dumps(config))
    with server_process(name, [sys.executable, "-m", "tests.servers.dot.serve",
                               str(d / "config.json")], cwd=REPO, log=d / "server.log",
                        env={"PYTHONPATH": str(REPO)}) as info:
        yield str(info["base"])


@pytest.fixture(scope="session")
def dot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DotServer]:
    d = tmp_path_factory.mktemp("dot-server")
    secret, introspector_secret = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    applications = [
        {"client_id": "exporter", "client_secret": secret},
        {"client_id": "introspector", "client_secret": introspector_secret},
    ]
    with run_dot(d, "django-oauth-toolkit", {"applications": applications}) as base:
        yield DotServer(base, "exporter", secret, "introspector", introspector_secret)
