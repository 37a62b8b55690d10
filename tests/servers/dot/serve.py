"""Run the django-oauth-toolkit test server: ``python -m tests.servers.dot.serve CONFIG.json``.

Creates the sqlite schema and the configured client-credentials applications,
then serves on a loopback port the kernel picks and prints
``{"base": "http://127.0.0.1:PORT"}`` as its first line of output.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIServer, make_server


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def main() -> None:
    config_path = Path(sys.argv[1])
    config = json.loads(config_path.read_text())
    os.environ["DOT_SERVER_CONFIG"] = str(config_path)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.servers.dot.settings"

    import django

    django.setup()
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from oauth2_provider.models import get_application_model

    call_command("migrate", verbosity=0, interactive=False)
    application_model = get_application_model()
    for app in config.get("applications", []):
        application_model.objects.create(
            name=app["client_id"],
            client_id=app["client_id"],
            client_secret=app["client_secret"],
            # Stored as given: DOT's default PBKDF2 hashing costs a large part
            # of a second per client authentication on a small test machine.
            hash_client_secret=False,
            client_type=application_model.CLIENT_CONFIDENTIAL,
            authorization_grant_type=application_model.GRANT_CLIENT_CREDENTIALS,
        )
    # wsgiref logs each request to stderr, the fixture's log file; stdout
    # carries only the address line.
    server = make_server("127.0.0.1", 0, get_wsgi_application(), server_class=_ThreadingServer)
    print(json.dumps({"base": f"http://127.0.0.1:{server.server_port}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
