"""The injection model's file format and maths: features, sublinear TF-IDF and a logistic regression.

Kept apart from :mod:`processors.guardrails.injection` (which uses a trained model) and
:mod:`processors.guardrails.injection_train` (which fits one), so neither imports the other.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Final

MODEL_PATH: Final = Path(__file__).with_name("models") / "injection_tfidf_lr.json.gz"
CACHE_PATH: Final = Path.home() / ".cache" / "ragstream" / "injection_tfidf_lr.json.gz"

_TOKEN_RE: Final = re.compile(r"[a-z0-9']+")


def featurize(text: str) -> list[str]:
    """Word unigrams, bigrams and in-word character 3-5 grams: char grams survive obfuscated spellings."""
    tokens = _TOKEN_RE.findall(text.lower())
    feats = [f"w:{t}" for t in tokens]
    feats.extend(f"b:{a} {b}" for a, b in pairwise(tokens))
    for t in tokens:
        padded = f" {t} "
        for n in (3, 4, 5):
            feats.extend(f"c:{padded[i : i + n]}" for i in range(len(padded) - n + 1))
    return feats


@dataclass(slots=True)
class LinearTextModel:
    """Sublinear TF-IDF, L2-normalised, into a logistic regression: scikit-learn's maths, re-done in 30 lines."""

    idf: dict[str, float]
    coef: dict[str, float]
    intercept: float
    threshold: float = 0.5
    meta: dict[str, object] = field(default_factory=dict)

    def probability(self, text: str) -> float:
        counts = Counter(f for f in featurize(text) if f in self.idf)
        if not counts:
            return 1.0 / (1.0 + math.exp(-self.intercept))
        weights = {f: (1.0 + math.log(c)) * self.idf[f] for f, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        z = self.intercept + sum(w * self.coef.get(f, 0.0) for f, w in weights.items()) / norm
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def calibrated(self, text: str) -> float:
        """Probability mapped so the model's tuned threshold lands on 0.5 (policies then share one scale)."""
        p, t = self.probability(text), min(max(self.threshold, 0.01), 0.99)
        return 0.5 * p / t if p < t else 0.5 + 0.5 * (p - t) / (1.0 - t)

    def top_features(self, text: str, n: int = 3) -> list[str]:
        """The word features that pushed the score up most, for a human-readable reason."""
        present = {f for f in featurize(text) if f in self.coef and not f.startswith("c:")}
        ranked = sorted(present, key=lambda f: -self.coef[f] * self.idf.get(f, 0.0))
        return [f for f in ranked[:n] if self.coef[f] > 0]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": "ragstream.linear_text_model.v1",
            "intercept": self.intercept,
            "threshold": self.threshold,
            "meta": self.meta,
            "features": [[f, round(self.idf[f], 5), round(self.coef.get(f, 0.0), 6)] for f in sorted(self.idf)],
        }
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:
            json.dump(payload, fh, separators=(",", ":"))

    @classmethod
    def load(cls, path: Path) -> LinearTextModel:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            payload = json.load(fh)
        if payload.get("format") != "ragstream.linear_text_model.v1":
            raise ValueError(f"{path}: not a ragstream linear text model")
        idf = {str(f): float(i) for f, i, _ in payload["features"]}
        coef = {str(f): float(c) for f, _, c in payload["features"] if c}
        return cls(idf, coef, float(payload["intercept"]), float(payload["threshold"]), dict(payload["meta"]))
