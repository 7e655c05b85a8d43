"""Build-time training of the injection model from labelled sets that ship in packages (no download).

Training data (:mod:`processors.guardrails.training_data`): the train splits of S-Labs and neuralchemy, 70% of the
multilingual yanismiraoui attacks, and benign text the injection sets lack: chatterbot-corpus chat turns in 20+
languages and Python documentation sentences. The threshold is picked on the validation splits of the same sources.
Never trained on: the test splits, bastioncorpus and jailbreak-corpus-mini (cross-dataset checks), and the
hand-written sets in ``benchmarks/guardrails/`` (the reported figures).

Run ``python -m processors.guardrails.injection_train`` to (re)build ``models/injection_tfidf_lr.json.gz``.
scikit-learn is needed here only; the runtime model in :mod:`injection` does its own inference.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from processors.guardrails import training_data as td
from processors.guardrails.injection_model import MODEL_PATH, LinearTextModel, featurize
from processors.guardrails.textnorm import normalize
from processors.guardrails.training_data import Labelled

Dataset = Literal["slabs", "neuralchemy"]
Split = td.Split


def load(dataset: Dataset, split: Split) -> Labelled:
    """One public injection set's split (kept for the cross-dataset benchmark)."""
    return td.slabs(split) if dataset == "slabs" else td.neuralchemy(split)


def training_mix(split: Split, *, without: frozenset[str] = frozenset()) -> Labelled:
    """Every training source's ``split`` joined; ``without`` leaves sources out (leave-one-dataset-out checks)."""

    def pydocs(s: Split) -> Labelled:
        return td.pydocs(s, limit=6000 if s == "train" else 1500)

    sources: dict[str, Callable[[Split], Labelled]] = {
        "slabs": td.slabs,
        "neuralchemy": td.neuralchemy,
        "yanismiraoui": td.yanismiraoui,
        "chatter": td.chatter,
        "pydocs": pydocs,
    }
    data = Labelled([], [])
    for name, loader in sources.items():
        if name not in without:
            data = data + loader(split)
    return data


def fit(data: Labelled, *, c: float = 4.0, min_df: int = 2) -> LinearTextModel:
    """Sublinear TF-IDF + class-balanced logistic regression, exported to the pickle-free runtime format."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    vec = TfidfVectorizer(analyzer=featurize, min_df=min_df, sublinear_tf=True, norm="l2")
    # the runtime model sees normalised text (NFKC, invisibles dropped), so it is trained on the same
    x = vec.fit_transform([normalize(t).text for t in data.texts])
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
    """Best-F1 threshold on held-out data from the *training* sources (never on the sets we report on)."""
    probs = [model.probability(normalize(t).text) for t in data.texts]
    best = (0.0, 0.5)
    for step in range(10, 91):
        th = step / 100
        f1 = score([int(p >= th) for p in probs], data.labels).f1
        if f1 > best[0] + 1e-9:
            best = (f1, th)
    return best[1]


def train(train_on: Dataset) -> LinearTextModel:
    """One public set alone (the cross-dataset benchmark trains on each and tests on the other)."""
    model = fit(load(train_on, "train"))
    model.threshold = pick_threshold(model, load(train_on, "validation"))
    model.meta = {"trained_on": f"{train_on}/train", "threshold_from": f"{train_on}/validation"}
    return model


def train_mix(*, without: frozenset[str] = frozenset()) -> LinearTextModel:
    model = fit(training_mix("train", without=without))
    model.threshold = pick_threshold(model, training_mix("validation", without=without))
    used = sorted({"slabs", "neuralchemy", "yanismiraoui", "chatter", "pydocs"} - without)
    model.meta = {"trained_on": [f"{u}/train" for u in used], "threshold_from": [f"{u}/validation" for u in used]}
    return model


def train_default() -> LinearTextModel:
    """The shipped model: every training source."""
    return train_mix()


def main(argv: Sequence[str] = ()) -> int:
    out = Path(argv[0]) if argv else MODEL_PATH
    model = train_default()
    for name, data in (("slabs_test", td.slabs("test")), ("neuralchemy_test", td.neuralchemy("test")),
                       ("bastion", td.bastion())):  # fmt: skip
        pred = [int(model.probability(normalize(t).text) >= model.threshold) for t in data.texts]
        model.meta[name] = score(pred, data.labels).as_dict()
    model.save(out)
    print(json.dumps({"path": str(out), "bytes": out.stat().st_size, "features": len(model.idf), **model.meta}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
