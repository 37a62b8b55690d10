"""prometheus_client's exposition and parser functions, with their types stated.

Some of them carry no annotations, and mypy (strict) refuses a call to an
unannotated function from typed code; these names state the types they have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as _om_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as _parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as _parse_text
from prometheus_client.utils import floatToGoString

#: The registry's exposition in OpenMetrics 1.0.
om_latest: Callable[[CollectorRegistry], bytes] = _om_latest
#: OpenMetrics text to families; raises on anything invalid.
om_families: Callable[[str], Iterable[Metric]] = _parse_openmetrics
#: Prometheus text format to families.
text_families: Callable[[str], Iterable[Metric]] = _parse_text
#: A float as Go (and so Prometheus) writes it.
go_float: Callable[[float], str] = floatToGoString
