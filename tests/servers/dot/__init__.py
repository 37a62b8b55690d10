"""A minimal django-oauth-toolkit project: authorization server or resource server.

``settings`` reads its mode from the JSON file named by ``DOT_SERVER_CONFIG``;
``serve`` runs it on a loopback port (see ``tests/servers/dot_server.py`` and
``tests/servers/resource_server.py`` for the fixtures).
"""
