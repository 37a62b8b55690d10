"""The simulated vendors: one module each, listed once here.

``VENDORS`` is the list the rest of the simulator derives from: ``KINDS``,
``TOKEN_PATHS``, ``DEFAULT_LIFETIMES``, ``DEMO_CLIENTS`` and ``Simulation``.
``OPTIONAL_VENDORS`` can be started by kind (``SimulatedProvider("oidc")``)
but are no seed provider, so neither ``--demo`` nor ``KINDS`` has them. To
add a vendor, write ``vendors/<kind>.py`` with a ``Vendor`` subclass and add
it below.
"""

from __future__ import annotations

from exporter.simulator.vendors.base import Vendor
from exporter.simulator.vendors.dokstamp import DokStamp
from exporter.simulator.vendors.oidc import GenericOidc
from exporter.simulator.vendors.simpledocs import SimpleDocs
from exporter.simulator.vendors.simplestore import SimpleStore
from exporter.simulator.vendors.simplifi import Simplifi
from exporter.simulator.vendors.smartdocumentor import SmartDocumentor

#: The five seed providers, in the order of the seed table.
VENDORS: tuple[type[Vendor], ...] = (SimpleDocs, SmartDocumentor, Simplifi, SimpleStore, DokStamp)

#: Standards-based servers for the exporter's discovery and JWT client authentication.
OPTIONAL_VENDORS: tuple[type[Vendor], ...] = (GenericOidc,)

BY_KIND: dict[str, type[Vendor]] = {
    vendor.kind: vendor for vendor in (*VENDORS, *OPTIONAL_VENDORS)
}

__all__ = [
    "BY_KIND",
    "OPTIONAL_VENDORS",
    "VENDORS",
    "DokStamp",
    "GenericOidc",
    "SimpleDocs",
    "SimpleStore",
    "Simplifi",
    "SmartDocumentor",
    "Vendor",
]
