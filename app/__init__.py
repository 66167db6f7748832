"""Imaging-X Portal: a catalog of open medical imaging datasets, its search portal and fusion jobs."""

__version__ = "0.1.0"
