"""Every exception class nmt raises on purpose. Commands turn them into one line on stderr and an exit code
(`nmt.cli`): UsageError and DataError exit 2, CheckpointError too; anything else is a bug and shows its traceback.
"""
from __future__ import annotations


class UsageError(ValueError):
    """A flag or setting that cannot work: names the flag and what it allows. Commands exit 2 on it. `field` and
    `detail` let a reader of a saved config name the file's key instead of the flag (`config.in_file`)."""

    def __init__(self, message: str, field: str = None, detail: str = None):
        super().__init__(message)
        self.field, self.detail = field, detail


class StudyError(UsageError):
    """A study file that cannot be used: names the file, the key's path and what is allowed (exit 2)."""


class DataError(Exception):
    """Input that cannot be used (a corpus, a results file, a cache entry), with the file and entry that say why."""


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded safely: names the file and what is wrong."""
