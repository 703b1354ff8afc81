"""edgeproof: prove an ML model fits its edge board before it ships, and keep it fitting in the field."""

__version__ = "0.1.0"
