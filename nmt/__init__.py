"""nmt: label smoothing vs temperature scaling in neural machine translation (Mueller, Kornblith & Hinton 2019)."""

__version__ = "0.2.0"


def __getattr__(name):  # `from nmt import Translator` without importing torch for `import nmt`
    if name in ("Translator", "Translation"):
        from nmt import translator
        return getattr(translator, name)
    raise AttributeError(f"module 'nmt' has no attribute {name!r}")
