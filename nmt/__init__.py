"""nmt: label smoothing vs temperature scaling in neural machine translation (Mueller, Kornblith & Hinton 2019)."""

__version__ = "0.2.0"
