"""The methods of each API; importing this module registers them."""

from . import companies, general, licensing, network, packages, reports  # noqa: F401
