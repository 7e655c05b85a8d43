"""Where the feature router and the seed heuristic disagree, on hand-written cases and on the Python FAQ headings.

    python benchmarks/router/compare_routers.py [--all]

The ``want`` column is the tier the author of these cases would pick by reading the question and the evidence
profile (what a small model is likely to get wrong), not a measurement of answer quality; it makes the design
choices visible and arguable. Evidence profiles: ``one`` = strong evidence in one document, ``spread`` = strong
evidence in four documents, ``weak`` = best passage scores 0.15 on the reranker's [0, 1] scale.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from processors.query.router import FeatureRouter, HeuristicRouter, Router  # noqa: E402
from schemas.events import Passage  # noqa: E402

FAQ_DIR = Path("/usr/share/doc/python3.11/html/faq")


def _passages(profile: str) -> list[Passage]:
    scores = {
        "one": [("a", 0.9), ("a", 0.85), ("b", 0.3), ("c", 0.2)],
        "spread": [("a", 0.9), ("b", 0.85), ("c", 0.8), ("d", 0.75)],
        "weak": [("a", 0.15), ("b", 0.1)],
    }[profile]
    return [Passage(chunk_id=f"{d}{i}", doc_id=d, text="", score=s) for i, (d, s) in enumerate(scores)]


# (question, evidence profile, tier the case's author would pick)
CASES: list[tuple[str, str, str]] = [
    ("What is Python?", "one", "small"),
    ("How do I sort a dict by value?", "one", "small"),
    ("How do I sort a dict by value?", "weak", "small"),
    ("What is the difference between a list and a tuple?", "one", "large"),
    ("Compare asyncio, threading and multiprocessing for downloading 10k URLs.", "spread", "large"),
    ("Is there a difference between == and is?", "one", "large"),
    ("Can you walk me step by step through creating a virtual environment?", "one", "small"),
    ("Explain why the default argument list keeps growing between calls.", "one", "small"),
    ("Why are Python strings immutable?", "one", "small"),
    ("Why are Python strings immutable?", "spread", "large"),
    ("Why am I getting an UnboundLocalError when the variable has a value?", "one", "large"),
    ("How do I fix ModuleNotFoundError: No module named 'yaml'?", "one", "small"),
    (
        "My script fails with\nTraceback (most recent call last):\n  File \"app.py\", line 3\n"
        "    print(d['k'])\nKeyError: 'k'\nwhat does it mean?",
        "one",
        "large",
    ),
    (
        "I have been learning Python for a couple of weeks from the official tutorial and some videos, and my team "
        "lead asked me about it, so how do I get the number of items in a list?",
        "one",
        "small",
    ),
    ("How do I read a CSV file, and how do I write only some of its columns to a new file?", "one", "small"),
    ("How do I read a CSV file, and why is the csv module slower than pandas, and which should I use?", "one",
     "large"),
    ("How do threads share data safely?", "spread", "large"),
    ("How does the GIL affect C extensions that release it during I/O?", "weak", "large"),
    ("thanks!", "weak", "small"),
    ("What are the pros and cons of using __slots__?", "one", "large"),
]  # fmt: skip


def faq_questions() -> list[str]:
    out = []
    for page in sorted(FAQ_DIR.glob("*.html")):
        for raw in re.findall(r'<h[2-4][^>]*>((?:(?!</h[2-4]>).)*?)<a class="headerlink"', page.read_text(), re.S):
            heading = html.unescape(re.sub(r"<.*?>", "", raw)).strip()
            if heading.endswith("?"):
                out.append(heading)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="print every FAQ decision, not only disagreements")
    args = parser.parse_args()
    routers: dict[str, Router] = {"heuristic": HeuristicRouter(), "feature": FeatureRouter()}

    print("Hand-written cases (want = the case author's pick)")
    print(f"{'want':<6} {'heur':<6} {'feat':<6} {'score':>5}  evidence  question / feature reasons")
    agree = dict.fromkeys(routers, 0)
    for question, profile, want in CASES:
        passages = _passages(profile)
        decisions = {name: r.route(question, passages, "bench") for name, r in routers.items()}
        for name, decision in decisions.items():
            agree[name] += decision.tier == want
        feat = decisions["feature"]
        flat = " ".join(question.split())
        print(
            f"{want:<6} {decisions['heuristic'].tier:<6} {feat.tier:<6} {feat.score:>5.2f}  {profile:<8}  {flat[:90]}"
        )
        print(f"{'':<36}{'; '.join(feat.reasons)}")
    for name, count in agree.items():
        print(f"{name}: {count}/{len(CASES)} cases routed as the author would")

    if not FAQ_DIR.exists():
        print(f"\n{FAQ_DIR} not found (apt install python3.11-doc): FAQ comparison skipped")
        return 0
    questions = faq_questions()
    print(f"\nPython FAQ headings ({len(questions)} questions, evidence profile 'one')")
    large = dict.fromkeys(routers, 0)
    passages = _passages("one")
    for question in questions:
        decisions = {name: r.route(question, passages, "bench") for name, r in routers.items()}
        for name, decision in decisions.items():
            large[name] += decision.tier == "large"
        if args.all or decisions["heuristic"].tier != decisions["feature"].tier:
            feat = decisions["feature"]
            print(f"  heur={decisions['heuristic'].tier:<5} feat={feat.tier:<5} {feat.score:.2f}  {question}")
            print(f"      {'; '.join(feat.reasons)}")
    for name, count in large.items():
        print(f"{name}: {count}/{len(questions)} routed large ({100 * count / len(questions):.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
