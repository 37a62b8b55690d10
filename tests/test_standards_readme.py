"""The README's worked examples of standards-based credentials are valid configs.

Each YAML block of the section is loaded as it is written, with the files it
names made real (keys, certificates, a secret) in a temporary directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.clientauth import ALL_METHODS
from exporter.config import Config, parse_config
from tests.pki import Pki
from tests.servers import keys

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "### Standards-based credentials"


def examples() -> list[str]:
    text = README.read_text()
    section = text.split(SECTION, 1)[1].split("\n#", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> dict[str, str]:
    d = tmp_path_factory.mktemp("readme")
    signing = keys.generate_key("RSA")
    keys.self_signed_certificate(signing, d / "ops-signing.crt", "ops signing")
    (d / "ops-secret").write_text("a-secret-long-enough-for-hs256\n")
    return {
        "/run/secrets/ops-secret": str(d / "ops-secret"),
        "/run/secrets/ops-signing.pem": str(keys.write_pem(signing, d / "ops-signing.pem")),
        "/run/secrets/ops-signing.crt": str(d / "ops-signing.crt"),
        "/run/secrets/ops-client.crt": str(pki.client_cert),
        "/run/secrets/ops-client.key": str(pki.client_key),
        "/etc/ssl/private-ca.pem": str(pki.ca),
    }


def load(block: str, files: dict[str, str]) -> Config:
    for written, real in files.items():
        block = block.replace(written, real)
    env = {"AUTH0_CLIENT_ID": "exporter", "AUTH0_CLIENT_SECRET": "auth0-secret-value"}
    return parse_config(block, "README.md", env)


@pytest.mark.slow
def test_every_example_loads_and_every_method_has_one(files: dict[str, str]) -> None:
    blocks = examples()
    assert len(blocks) >= len(ALL_METHODS)
    providers = [p for block in blocks for p in load(block, files).providers]
    assert {p.auth_method for p in providers} == set(ALL_METHODS)
    issuers = [p.issuer or "" for p in providers]
    assert any("/realms/" in i for i in issuers)  # Keycloak
    assert any(i.startswith("https://login.microsoftonline.com/") for i in issuers)  # Entra ID
    entra = next(p for p in providers if p.name == "entra-graph")
    assert entra.signing_key is not None and entra.signing_key.x5t is not None
    mtls = next(p for p in providers if p.name == "keycloak-mtls")
    assert mtls.client_secret is None and mtls.probes[0].kind == "introspection"
