from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from exporter.simulator import SimulatedProvider
from tests.simulator.simclient import CLIENT_ID, SECRET, Factory


@pytest.fixture
def make() -> Iterator[Factory]:
    """Start providers with one registered client; stop them all afterwards."""
    started: list[SimulatedProvider] = []

    def factory(kind: str, *, scopes: str | None = None, **kwargs: Any) -> SimulatedProvider:
        provider = SimulatedProvider(kind, **kwargs)
        provider.add_client(CLIENT_ID, SECRET, scopes=scopes)
        started.append(provider.start())
        return provider

    yield factory
    for provider in started:
        provider.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client
