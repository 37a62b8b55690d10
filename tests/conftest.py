from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporter.cli import DEMO_LIFETIMES, demo_config, demo_environment
from exporter.config import Config
from exporter.simulator import Simulation


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
