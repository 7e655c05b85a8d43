"""The answer figures of a ``ragstream eval`` results folder on each half of its golden set.

Settings of the answer strategies (the extractive scorer's weights and refusal threshold) were chosen on the
development half (:func:`processors.evaluation.golden.development_half`); the held-out half is the figure to quote.
The figures are those of the run's own report (:func:`processors.evaluation.scoring.quality_of`), per half.

    python benchmarks/eval/halves.py benchmarks/results/eval/<run>
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from processors.evaluation.golden import development_half
from processors.evaluation.scoring import CaseRecord, quality_of

COLUMNS = ("correctness", "answered_coverage", "refusal_accuracy", "false_refusal_rate")


def main(folder: Path) -> None:
    for cases_dir in sorted(folder.glob("cases*")):
        cases = [msgspec.json.decode(p.read_bytes(), type=CaseRecord) for p in sorted(cases_dir.glob("*.json"))]
        dev = [c for c in cases if development_half(c.id)]
        held = [c for c in cases if not development_half(c.id)]
        print(f"## {cases_dir.name}")
        print("| half | cases | correct when answered | answered coverage | refusal accuracy | false refusals |")
        print("|---|---|---|---|---|---|")
        for name, part in (("development", dev), ("held-out", held), ("all", cases)):
            quality = quality_of(part)
            row = [getattr(quality, k) for k in COLUMNS]
            print(f"| {name} | {len(part)} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in row) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
