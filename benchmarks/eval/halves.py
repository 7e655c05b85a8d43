"""The answer figures of a ``ragstream eval`` results folder on each half of its golden set.

Settings of the answer strategies (the extractive scorer's weights and refusal threshold) were chosen on the
development half (:func:`processors.evaluation.golden.development_half`); the held-out half is the figure to quote.

    python benchmarks/eval/halves.py benchmarks/results/eval/<run>
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from processors.evaluation.golden import development_half

COLUMNS = ("correct_when_answered", "answered_coverage", "refusal_accuracy", "false_refusal_rate")


def figures(cases: Sequence[dict[str, Any]]) -> dict[str, float | int | None]:
    """Correctness on answered, coverage, refusal accuracy and false refusals of these scored cases."""
    answerable = [c for c in cases if not c["expect_refusal"] and not c["error"]]
    answered = [c for c in answerable if not c["refused"]]
    expected = [c for c in cases if c["expect_refusal"] and not c["error"]]

    def share(part: int, whole: int) -> float | None:
        return round(part / whole, 3) if whole else None

    return {
        "cases": len(cases),
        "correct_when_answered": share(sum(1 for c in answered if c["scores"]["correct"]), len(answered)),
        "answered_coverage": share(len(answered), len(answerable)),
        "refusal_accuracy": share(sum(1 for c in expected if c["refused"]), len(expected)),
        "false_refusal_rate": share(len(answerable) - len(answered), len(answerable)),
    }


def main(folder: Path) -> None:
    for cases_dir in sorted(folder.glob("cases*")):
        cases = [json.loads(p.read_text()) for p in sorted(cases_dir.glob("*.json"))]
        dev = [c for c in cases if development_half(c["id"])]
        held = [c for c in cases if not development_half(c["id"])]
        print(f"## {cases_dir.name}")
        print("| half | cases | correct when answered | answered coverage | refusal accuracy | false refusals |")
        print("|---|---|---|---|---|---|")
        for name, part in (("development", dev), ("held-out", held), ("all", cases)):
            f = figures(part)
            row = [f[k] for k in COLUMNS]
            print(f"| {name} | {f['cases']} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in row) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
