"""Base class of every paro gateware block: parameters are validated before Amaranth tracks the object.

Amaranth records each elaboratable when it is created (``__new__``) and warns about any that is never
elaborated. A block whose parameters are wrong must therefore refuse them *before* it exists: subclasses
state their checks in :meth:`ConfiguredComponent.check`, which ``__new__`` runs first, so a bad parameter
raises one :class:`~paro.errors.ParoError` line and leaves nothing behind.
"""

from amaranth.lib import wiring

from paro.config import AcceleratorConfig
from paro.errors import ParoError
from paro.sw.contract import check_engine_config

__all__ = ["ConfiguredComponent", "EngineBlock", "check_lanes"]


class ConfiguredComponent(wiring.Component):
    """A ``wiring.Component`` built from an :class:`~paro.config.AcceleratorConfig` (first argument)."""

    def __new__(cls, config, *args, **kwargs):
        if not isinstance(config, AcceleratorConfig):
            raise ParoError(f"{cls.__name__} needs an AcceleratorConfig, got {type(config).__name__}")
        cls.check(config, *args, **kwargs)
        return super().__new__(cls, config, *args, src_loc_at=1, **kwargs)

    @classmethod
    def check(cls, config, *args, **kwargs):
        """Raise :class:`~paro.errors.ParoError` if the block cannot be built with these parameters."""

    def __init__(self, config, signature):
        self._config = config
        super().__init__(signature)

    @property
    def config(self):
        return self._config


class EngineBlock(ConfiguredComponent):
    """A block that exists only inside the attention engine: built for configurations the engine takes."""

    @classmethod
    def check(cls, config):
        check_engine_config(config)


def check_lanes(config, lanes, block):
    """Refuse ``lanes`` (values a beat of ``block``, which walks a head_dim-long row in beats) unless it is a
    power of two dividing ``head_dim``."""
    if not isinstance(lanes, int) or lanes < 1 or lanes & (lanes - 1) or config.head_dim % lanes:
        raise ParoError(f"{block} lanes must be a power of two dividing head_dim {config.head_dim}, got {lanes}")
