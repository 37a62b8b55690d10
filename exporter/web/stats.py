"""The web server's own metrics: open connections and connections shed at the cap.

A collector of its own, reading two numbers the server keeps, so the server
needs no prometheus-client objects and the families can join the exporter's
list of metric descriptions as they are::

    oauth_exporter_http_connections_open 3.0
    oauth_exporter_http_connections_shed_total 0.0
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONNECTIONS_OPEN = "oauth_exporter_http_connections_open"
CONNECTIONS_SHED = "oauth_exporter_http_connections_shed"  # _total added by the encoder


@dataclass
class HTTPStats:
    """Written by the server on the event loop; read at scrape time."""

    #: Connections accepted and not yet closed, TLS handshakes included.
    open: int = 0
    #: Connections closed because the connection cap was reached.
    shed: int = 0


class HTTPServerCollector(Collector):
    def __init__(self, stats: HTTPStats) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registration must not call collect()

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            CONNECTIONS_OPEN,
            "HTTP connections open to the exporter's web server, TLS handshakes included.",
            value=self._stats.open)
        yield CounterMetricFamily(
            CONNECTIONS_SHED,
            "HTTP connections closed because the connection cap (--web.max-connections) "
            "was reached: the longest-idle first.",
            value=self._stats.shed)
