"""The methods of each API; importing this module registers them."""

from . import companies, general  # noqa: F401
