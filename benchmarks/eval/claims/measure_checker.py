"""Accuracy of a claim checker on the hand-labelled claims, on a development half and a held-out half.

The split is fixed (seed 20261201, the rows shuffled then halved): rules were changed only after reading errors on
the development half, so the held-out half is the figure to quote. Printed per half: 3-way accuracy, the confusion
matrix, and what matters most in the answer path: how often a "contradicted" verdict is right (precision) and how
many supported sentences it wrongly flags.

    python benchmarks/eval/claims/measure_checker.py [--checker lexical] [--json OUT]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from processors.claims.lexical import LexicalClaimChecker
from processors.claims.verdicts import ClaimChecker

CLAIMS = Path(__file__).resolve().parent / "python_claims.jsonl"
LABELS = ("supported", "contradicted", "not_mentioned")
SEED = 20261201


def halves(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    shuffled = list(rows)
    random.Random(SEED).shuffle(shuffled)
    middle = len(shuffled) // 2
    return {"development": shuffled[:middle], "held-out": shuffled[middle:], "all": shuffled}


def measure(checker: ClaimChecker, rows: list[dict[str, Any]]) -> dict[str, Any]:
    confusion: collections.Counter[tuple[str, str]] = collections.Counter()
    for row in rows:
        confusion[(row["label"], checker.check(row["sentence"], row["passage"]).label)] += 1
    flagged = sum(n for (_, said), n in confusion.items() if said == "contradicted")
    truly = sum(n for (label, _), n in confusion.items() if label == "contradicted")
    supported = sum(n for (label, _), n in confusion.items() if label == "supported")
    hit = confusion[("contradicted", "contradicted")]
    return {
        "rows": len(rows),
        "accuracy": round(sum(confusion[(label, label)] for label in LABELS) / len(rows), 3),
        "contradicted_precision": round(hit / flagged, 3) if flagged else None,
        "contradicted_recall": round(hit / truly, 3) if truly else None,
        "supported_flagged_as_contradicted": f"{confusion[('supported', 'contradicted')]}/{supported}",
        "confusion": {f"{label}->{said}": confusion[(label, said)] for label in LABELS for said in LABELS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checker", choices=["lexical"], default="lexical")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rows = [json.loads(line) for line in CLAIMS.read_text().splitlines() if line.strip()]
    checker = LexicalClaimChecker()
    results = {name: measure(checker, part) for name, part in halves(rows).items()}
    for name, figures in results.items():
        print(
            f"{name:12s} n={figures['rows']:3d}  accuracy {figures['accuracy']:.3f}  "
            f"contradicted precision {figures['contradicted_precision']}  recall {figures['contradicted_recall']}  "
            f"supported flagged {figures['supported_flagged_as_contradicted']}"
        )
    if args.json:
        args.json.write_text(json.dumps({"checker": args.checker, "seed": SEED, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
