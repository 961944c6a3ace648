"""The two tables of docs/representations.md's distillation section, made from results/distill/comparison.json.

    python scripts/distill_tables.py [results/distill]

1. Every model of the study (first test set): BLEU (beam, T = 1), teacher-forced token accuracy, test NLL at
   T = 1, the fitted temperature, test NLL at the fitted T; mean ± std over the seeds, and n.
2. The claims by setting (the text after the claim's first ", "): one column per metric (and BLEU's
   equivalence companion), each cell the Holm verdict (and the unadjusted one where it differs) and the
   difference (a − b) with its interval and n.
tests/test_scripts.py checks that docs/representations.md carries both tables as this prints them.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nmt.errors import DataError  # noqa: E402
from nmt.report import claim_format, markdown_table, mean_std  # noqa: E402
from nmt.results import Comparison, load_comparison  # noqa: E402
from nmt.stats import Claim  # noqa: E402

# (t_kind, metric key, column title, format)
MODEL_COLUMNS = [("1", "bleu_beam", "BLEU beam", "{:.2f}"), ("1", "accuracy", "token accuracy", "{:.4f}"),
                 ("1", "test_nll", "test NLL (T = 1)", "{:.3f}"), ("fitted", "temperature", "fitted T", "{:.3f}"),
                 ("fitted", "test_nll", "test NLL (fitted T)", "{:.3f}")]
CLAIM_COLUMNS = [("bleu_beam", "BLEU beam"), ("bleu_beam ≈", "BLEU beam within the margin (TOST)"),
                 ("accuracy", "token accuracy"), ("test_nll", "NLL at the fitted T")]


def signed(fmt: str, x: float) -> str:
    """A signed figure with a typographic minus, as the docs print them."""
    return fmt.format(x).replace("-", "−")


def models_table(data: Comparison) -> str:
    """Table 1: one line per model, in the study's order."""
    agg = {(a.model, a.t_kind): a for a in data.aggregates_on(data.test_sets[0])}
    body = []
    for model in data.meta["model_order"]:
        if (model, "1") not in agg:
            continue
        cells = [mean_std(agg[model, kind], key, fmt) for kind, key, _, fmt in MODEL_COLUMNS]
        body.append([agg[model, "1"].label] + cells + [str(agg[model, "1"].n)])
    return markdown_table(["model"] + [t for _, _, t, _ in MODEL_COLUMNS] + ["n"], body)


def claim_cell(c: Claim) -> str:
    """The Holm verdict (and the unadjusted one where they differ), the difference, its interval (95%; 90% for
    an equivalence) and n."""
    fmt = claim_format(c.metric)
    verdict = f"**{c.verdict_holm}**" if c.verdict_holm == "holds" else c.verdict_holm
    before = "" if c.verdict == c.verdict_holm else f"{c.verdict} before Holm; "
    if c.ci is None:
        return f"{verdict} ({before}n = {c.n})"
    lo, hi = (signed(fmt, x) for x in c.ci)
    return f"{verdict} ({before}{signed(fmt, c.estimate)} [{lo}, {hi}]; n = {c.n})"


def claims_table(data: Comparison) -> str:
    """Table 2: one line per setting, one column per metric."""
    settings: dict = {}
    for c in data.claims:
        key = c.metric + (" ≈" if c.direction == "equivalent" else "")
        settings.setdefault(c.claim.split(", ", 1)[1], {})[key] = c
    body = [[setting] + [claim_cell(row[key]) if key in row else "-" for key, _ in CLAIM_COLUMNS]
            for setting, row in settings.items()]
    return markdown_table(["setting"] + [t for _, t in CLAIM_COLUMNS], body)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    results = Path(argv[0]) if argv else ROOT / "results" / "distill"
    try:
        data = load_comparison(results)
        tables = models_table(data) + "\n\n" + claims_table(data)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        print(f"error: {results / 'comparison.json'}: not a distillation study's comparison.json "
              f"({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    print(tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
