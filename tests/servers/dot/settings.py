"""Django settings for the django-oauth-toolkit test server.

Everything comes from the JSON file named by ``DOT_SERVER_CONFIG``: the
sqlite file, the token lifetime, and, for a resource server, the remote
introspection endpoint and the credential it introspects with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_CONFIG: dict[str, Any] = json.loads(Path(os.environ["DOT_SERVER_CONFIG"]).read_text())

SECRET_KEY = _CONFIG["secret_key"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "oauth2_provider",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.servers.dot.urls"
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _CONFIG["database"]},
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

OAUTH2_PROVIDER: dict[str, Any] = {
    "SCOPES": {
        "read": "Read the test API",
        "write": "Write the test API",
        "introspection": "Introspect tokens",
    },
    "ACCESS_TOKEN_EXPIRE_SECONDS": _CONFIG["access_token_ttl"],
}

_REMOTE = _CONFIG.get("introspection")
if _REMOTE:
    # A resource server for tokens another server issued: DOT asks that
    # server's RFC 7662 endpoint about every token it does not know.
    OAUTH2_PROVIDER.update(
        RESOURCE_SERVER_INTROSPECTION_URL=_REMOTE["url"],
        RESOURCE_SERVER_INTROSPECTION_CREDENTIALS=(_REMOTE["client_id"], _REMOTE["client_secret"]),
        # DOT caches an introspected token this long; one second lets the tests
        # see a revocation at the issuer without waiting for the token's expiry.
        RESOURCE_SERVER_TOKEN_CACHING_SECONDS=1,
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
