"""The methods of each API; importing this module registers them."""

from . import companies, general, network  # noqa: F401
