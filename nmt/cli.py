"""What every command (`python -m nmt.train`, `.decode`, `.study`, `.visualize`, `.export`, `.data`) does the
same way: logging, and turning errors into one line and an exit code.

    exit 0   done
    exit 1   an I/O failure (disk full, unwritable folder): one line naming the file
    exit 2   bad input: a flag, a file or a setting that cannot work (UsageError, DataError, CheckpointError)
    exit 130 interrupted before anything was saved
"""
from __future__ import annotations

import logging
import sys


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run(body, interrupted: str = "interrupted") -> int:
    """Call `body()` (which returns an exit code) and map the errors of the module docstring to theirs."""
    from nmt.errors import CheckpointError, DataError, UsageError
    setup_logging()
    try:
        return body()
    except (DataError, CheckpointError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, read-only folder, ...: what was written before is intact
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 1


def add_search_kernels(p) -> None:
    """--search-kernels: the beam search's linear maps (`nmt.levers`)."""
    p.add_argument("--search-kernels", default="auto", choices=("auto", "packed", "plain"),
                   help="the beam search's linear maps on the CPU: prepacked for oneDNN (packed), torch's own (plain), "
                        "or auto: whichever measured faster on this machine and model shape (measured once, cached "
                        "in ~/.cache/nmt/levers.json; the same hypotheses either way)")
