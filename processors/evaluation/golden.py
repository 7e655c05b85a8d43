"""Golden sets: what a good answer to a question is, and where in the corpus it lives.

One JSON object per line (JSONL), so any corpus gets a golden set by writing a file: ``id``, ``question``,
``reference_answer``, ``relevant`` (where the answer lives: a document by ``doc_id`` and/or ``source_uri``,
optionally narrowed to a character span of the loader's cleaned text, or identified by a ``text_snippet``),
``expect_refusal`` and ``tags``. Unknown fields are ignored so files can carry extra annotations. A plain text file
(one question per line) is accepted too: such cases have no reference and no known relevance, and the metrics that
need those are left out rather than guessed.

:func:`build_faq_golden` makes the development set from the Python FAQ HTML pages with the ingestion loader, so the
spans are in the same coordinates as the chunks the indexer stores (``Chunk.char_start``/``char_end``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec

from processors.ingest.loaders import load_html

DEFAULT_FAQ_DIR = Path("/usr/share/doc/python3.11/html/faq")
SNIPPET_CHARS = 160
MIN_ANSWER_CHARS = 20

_QUESTION_START = re.compile(
    r"^(how|what|why|is|are|can|could|do|does|did|should|where|when|which|who|will|would|i\b|i’m|i'm|my)\b",
    re.IGNORECASE,
)


class Relevant(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where (part of) the answer lives. A chunk is relevant when it is in this document and overlaps the span."""

    doc_id: str | None = None
    source_uri: str | None = None
    char_start: int | None = None
    char_end: int | None = None
    text_snippet: str | None = None


class GoldenCase(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    question: str
    reference_answer: str = ""
    relevant: list[Relevant] = msgspec.field(default_factory=list)
    expect_refusal: bool = False
    tags: list[str] = msgspec.field(default_factory=list)
    # What a correct answer must state, each as a short canonical string ("5", "DEFAULT_PROTOCOL", "immutable"),
    # with other accepted spellings per fact ({"5": ["five"]}); empty: the case measures retrieval and refusal only.
    key_facts: list[str] = msgspec.field(default_factory=list)
    key_fact_alternatives: dict[str, list[str]] = msgspec.field(default_factory=dict)


class GoldenError(ValueError):
    """A golden file line that is not a valid case; the message names the file and line."""


_decoder = msgspec.json.Decoder(GoldenCase)
_encoder = msgspec.json.Encoder()


def development_half(case_id: str) -> bool:
    """Whether a case belongs to its golden set's development half (a fixed split by a hash of the id): settings
    are chosen on that half, and the other, held-out half is the figure to quote."""
    return int(hashlib.sha256(case_id.encode()).hexdigest(), 16) % 2 == 0


def load_golden(path: str | Path) -> list[GoldenCase]:
    """Cases from a ``.jsonl`` golden file, or from a text file of questions (one per line, ``#`` comments)."""
    source = Path(path)
    lines = source.read_text(encoding="utf-8").splitlines()
    cases: list[GoldenCase] = []
    seen: set[str] = set()
    as_json = source.suffix.lower() in (".jsonl", ".json", ".ndjson")
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if as_json:
            try:
                case = _decoder.decode(stripped)
            except msgspec.DecodeError as exc:
                raise GoldenError(f"{source}:{number}: {exc}") from None
        else:
            case = GoldenCase(id=f"{source.stem}-{number}", question=stripped)
        if not case.question.strip():
            raise GoldenError(f"{source}:{number}: empty question")
        if case.id in seen:
            raise GoldenError(f"{source}:{number}: duplicate id {case.id!r}")
        seen.add(case.id)
        cases.append(case)
    return cases


def write_golden(cases: Iterable[GoldenCase], path: str | Path) -> int:
    """Write JSONL (one case per line, stable field order) and return the number of cases."""
    count = 0
    with Path(path).open("wb") as out:
        for case in cases:
            out.write(_encoder.encode(case) + b"\n")
            count += 1
    return count


def is_question(heading: str) -> bool:
    """FAQ headings that ask something: a question mark, or a question word first ("How do I ...")."""
    text = heading.strip()
    return text.endswith("?") or bool(_QUESTION_START.match(text))


def faq_cases(
    html: str, *, doc_id: str, source_uri: str, page: str, min_answer_chars: int = MIN_ANSWER_CHARS
) -> list[GoldenCase]:
    """One case per question heading of one FAQ page: the answer is the text under it up to the next heading."""
    doc = load_html(html)
    cases: list[GoldenCase] = []
    for section in doc.sections:
        if not section.heading_path or not is_question(section.heading_path[-1]):
            continue
        heading = section.heading_path[-1]
        # The loader writes "heading\n\nbody"; the answer is the body, trimmed of the separating whitespace.
        start = section.start + len(heading)
        body = doc.text[start : section.end]
        lead = len(body) - len(body.lstrip())
        start += lead
        end = start + len(body.strip())
        answer = doc.text[start:end]
        if len(answer) < min_answer_chars:
            continue  # a heading whose answer is all in subsections
        anchor = section.anchor or re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")
        snippet = answer[:SNIPPET_CHARS]
        cases.append(
            GoldenCase(
                id=f"faq/{page}#{anchor}",
                question=heading,
                reference_answer=answer,
                relevant=[
                    Relevant(doc_id=doc_id, source_uri=source_uri, char_start=start, char_end=end, text_snippet=snippet)
                ],
                tags=["faq", f"faq:{page}", f"h{len(section.heading_path)}"],
            )
        )
    return cases


def build_faq_golden(
    faq_dir: str | Path = DEFAULT_FAQ_DIR,
    *,
    corpus_root: str | Path | None = None,
    prefix: str = "",
    refusals: Sequence[tuple[str, str]] | None = None,
) -> list[GoldenCase]:
    """The development set: every FAQ question of ``faq_dir`` plus the out-of-corpus questions.

    ``doc_id`` is the page's path relative to ``corpus_root`` (default: the parent of ``faq_dir``, matching
    ``ragstream ingest <corpus_root>``) with ``prefix``; ``source_uri`` is the resolved file URI, which is what the
    indexer stores whatever directory was ingested, so either identifies the document.
    """
    folder = Path(faq_dir).expanduser().resolve()
    root = Path(corpus_root).expanduser().resolve() if corpus_root is not None else folder.parent
    cases: list[GoldenCase] = []
    for path in sorted(folder.glob("*.html")):
        if path.name == "index.html":
            continue  # the table of contents: its headings are links, not questions with answers
        doc_id = prefix + path.relative_to(root).as_posix()
        cases.extend(
            faq_cases(path.read_text(encoding="utf-8"), doc_id=doc_id, source_uri=path.as_uri(), page=path.stem)
        )
    for case_id, question in refusals if refusals is not None else OUT_OF_CORPUS:
        cases.append(GoldenCase(id=f"refuse/{case_id}", question=question, expect_refusal=True, tags=["out-of-corpus"]))
    return cases


# Questions the Python documentation cannot answer: a grounded assistant must decline them.
OUT_OF_CORPUS: tuple[tuple[str, str], ...] = (
    ("risotto", "How long should I stir a mushroom risotto before adding the parmesan?"),
    ("sourdough", "What hydration percentage should a beginner use for a sourdough starter?"),
    ("brisket", "At what internal temperature is a smoked beef brisket done?"),
    ("pasta-water", "How much salt should I add to a litre of pasta water?"),
    ("world-cup-2022", "Who won the 2022 FIFA World Cup final and what was the score?"),
    ("nba-2016", "Which team won the 2016 NBA Finals?"),
    ("tour-de-france", "How many stages does the Tour de France usually have?"),
    ("wimbledon", "Who has won the most Wimbledon men's singles titles?"),
    ("rust-borrow", "How does the Rust borrow checker decide when a mutable borrow ends?"),
    ("go-scheduler", "How does the Go runtime scheduler multiplex goroutines onto OS threads?"),
    ("jvm-g1", "How does the JVM's G1 garbage collector choose which regions to collect?"),
    ("v8-hidden-classes", "How do hidden classes in the V8 JavaScript engine speed up property access?"),
    ("haskell-laziness", "How does GHC implement lazy evaluation with thunks?"),
    ("postgres-vacuum", "When does PostgreSQL autovacuum run and what does it reclaim?"),
    ("kubernetes-hpa", "How does the Kubernetes horizontal pod autoscaler compute the desired replica count?"),
    ("tax-deadline", "What is the deadline for filing a US federal income tax return?"),
    ("mortgage", "Should I choose a fixed-rate or a variable-rate mortgage?"),
    ("everest", "How tall is Mount Everest and who first climbed it?"),
    ("photosynthesis", "What are the light-dependent reactions of photosynthesis?"),
    ("tomatoes", "When should I prune the suckers on tomato plants?"),
    ("marathon", "How many weeks of training does a first marathon need?"),
    ("guitar-tuning", "What is drop D tuning on a guitar?"),
    ("capital-australia", "What is the capital city of Australia?"),
    ("moon-landing", "In which year did Apollo 11 land on the Moon?"),
)
