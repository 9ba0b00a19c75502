"""vita: a library for fast end-to-end speech language models of the VITA-Audio kind."""

from vita_core.errors import VitaError

__all__ = ["VitaError"]
__version__ = "0.1.0"
