"""The methods of each API; importing this module registers them."""

from . import companies, general, licensing, network  # noqa: F401
