"""python -m nmt.export: write an nmt checkpoint as a CTranslate2 model (needs the `export` extra; nmt.ct2).

  python -m nmt.export --checkpoint runs/en-de/cpu/uniform0.1_seed1 --ctranslate2 exported/ls
  python -m nmt.export --checkpoint RUN --ctranslate2 exported/ls_int8 --quantization int8
  python -m nmt.decode --engine ctranslate2 --checkpoint exported/ls --beam 4

The folder must be new (or empty); it gets model.bin, the vocabulary, spm.model and nmt.json.
"""
from __future__ import annotations

import argparse
import sys

from nmt import cli, ct2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m nmt.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--ctranslate2", required=True, metavar="OUT_DIR", help="new folder for the CTranslate2 model")
    p.add_argument("--quantization", choices=["int8", "int8_float32", "int16", "float16"],
                   help="store the weights quantized (default: float32)")

    def body():
        args = p.parse_args(argv)
        out = ct2.export(args.checkpoint, args.ctranslate2, args.quantization)
        print(f"CTranslate2 model in {out}/ (model.bin, spm.model, nmt.json)\n"
              f"  decode with: python -m nmt.decode --engine ctranslate2 --checkpoint {out} --beam 4")
        return 0
    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
