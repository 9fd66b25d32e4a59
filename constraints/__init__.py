"""FPGA constraint files (``*.lpf``, ``*.pcf``), installed as package data of ``paro.constraints``.

The synthesis flow finds them with :mod:`importlib.resources`, so they work from a wheel as from the
repository.
"""
