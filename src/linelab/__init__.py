"""LineLab: the production line as its own R&D lab."""

__version__ = "0.1.0"
