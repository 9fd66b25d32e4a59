"""paro: an open, synthesizable accelerator generator for video-generation attention."""

from .config import AcceleratorConfig, PEMode
from .errors import ParoError

__all__ = ["AcceleratorConfig", "PEMode", "ParoError"]
