from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporter.cli import DEMO_LIFETIMES, demo_config, demo_environment
from exporter.config import Config
from exporter.simulator import Simulation
from tests.pki import Pki, make_pki
from tests.servers.dot_server import dot_server  # noqa: F401  (session fixture)
from tests.servers.oidc_provider import oidc_provider  # noqa: F401  (session fixture)
from tests.servers.resource_server import resource_server  # noqa: F401  (session fixture)


@pytest.fixture
def simulation() -> Iterator[Simulation]:
    sim = Simulation(lifetimes=DEMO_LIFETIMES).start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def demo(simulation: Simulation) -> Config:
    """The bundled --demo config, pointed at a fresh simulation."""
    return demo_config(demo_environment(simulation))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA with server and client certificates (see tests/pki.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
