"""python -m nmt.export: write an nmt checkpoint as a CTranslate2 model (needs the `export` extra; nmt.ct2).

  python -m nmt.export --checkpoint runs/cpu/alpha0.1_seed1 --ctranslate2 exported/ls
  python -m nmt.export --checkpoint RUN --ctranslate2 exported/ls_int8 --quantization int8
  python -m nmt.decode --engine ctranslate2 --checkpoint exported/ls --beam 4

The folder must be new (or empty); it gets model.bin, the vocabulary, spm.model and nmt.json.
"""
from __future__ import annotations

import argparse
import sys

from nmt import checkpoint as ckpt_io
from nmt import ct2
from nmt.config import UsageError
from nmt.data import DataError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m nmt.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--ctranslate2", required=True, metavar="OUT_DIR", help="new folder for the CTranslate2 model")
    p.add_argument("--quantization", choices=["int8", "int8_float32", "int16", "float16"],
                   help="store the weights quantized (default: float32)")
    args = p.parse_args(argv)
    try:
        out = ct2.export(args.checkpoint, args.ctranslate2, args.quantization)
    except (DataError, ckpt_io.CheckpointError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"CTranslate2 model in {out}/ (model.bin, spm.model, nmt.json)\n"
          f"  decode with: python -m nmt.decode --engine ctranslate2 --checkpoint {out} --beam 4")
    return 0


if __name__ == "__main__":
    sys.exit(main())
