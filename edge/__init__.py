"""lineside: visual inspection at the line."""

__version__ = "0.1.0"
