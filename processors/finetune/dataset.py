"""A tenant's training set for a LoRA adapter: grounded question answering in the pipeline's own prompt format.

Every example is what the query path would send the chat model and what a good answer to it is: the numbered
sources (:func:`processors.query.context.build_context`, the same numbering and quoting as the pipeline), the
registry's ``rag_qa`` template rendered with them and the question, the conversation in the model's chat format
(:func:`processors.adapters.chat_formats.render_chat`, the text Triton receives), and the target: an answer that
cites ``[n]`` after each sentence, or exactly the refusal sentence when the sources do not hold the answer.

Where the examples come from:

* the tenant's golden questions (``benchmarks/eval/golden``): the reference answer over the chunk that holds it
  (found by the case's ``relevant`` items, or its text snippet when no chunk matches) among distractors; a case that
  expects a refusal gets the refusal over the passages most like the question; a share of answerable cases also
  appear *without* their source, targeting the refusal, so the model learns both sides;
* questions generated from the tenant's chunks (no model: the chunk's heading asked as a question, its first
  sentences as the answer), with the same refusal share.

Held-out split: each example belongs to a group (the golden case, or the document a generated question came from)
and ``sha256(tenant/group) % 100 < holdout_percent`` puts the whole group in the held-out split, so the split is
stable across runs and machines and a held-out case never trains, not even as its refusal variant.

Pure functions: no Kafka, no model. Everything is deterministic for the same inputs (hashes, never ``random``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec

from processors.adapters.chat_formats import render_chat
from processors.citations import REFUSAL
from processors.evaluation.golden import GoldenCase
from processors.evaluation.metrics import chunk_matches
from processors.generation import ChatMessage
from processors.guardrails.stream_guard import content_words, split_sentences
from processors.prompts.registry import PromptTemplate, builtin_templates
from processors.query.context import build_context
from schemas.events import Passage
from schemas.finetune import FinetuneConfig

Split = Literal["train", "heldout"]

MAX_ANSWER_CHARS = 360
MAX_SOURCE_CHARS = 900
MIN_SENTENCE_CHARS = 30


class TrainingExample(msgspec.Struct, frozen=True, kw_only=True):
    """One prompt and its target answer, with what the evaluation needs to score an answer to it."""

    id: str
    group: str  # split unit: "golden:<case id>" or "doc:<doc id>"
    origin: Literal["golden", "generated"]
    split: Split
    question: str
    sources: list[Passage]
    prompt: str  # the rag_qa template rendered (the user message)
    text: str  # the model input in its chat format, ending with the assistant turn
    answer: str  # the target
    expect_refusal: bool
    reference_answer: str = ""
    key_facts: list[str] = msgspec.field(default_factory=list)
    key_fact_alternatives: dict[str, list[str]] = msgspec.field(default_factory=dict)


class TrainingSet(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    base_model: str
    examples: list[TrainingExample]
    data_hash: str  # sha256 of the examples as JSON lines: part of the adapter's identity

    def split(self, which: Split) -> list[TrainingExample]:
        return [e for e in self.examples if e.split == which]

    def sizes(self) -> dict[str, int]:
        train, held = self.split("train"), self.split("heldout")
        return {
            "train": len(train),
            "heldout": len(held),
            "train_refusals": sum(e.expect_refusal for e in train),
            "heldout_refusals": sum(e.expect_refusal for e in held),
            "golden": sum(e.origin == "golden" for e in self.examples),
            "generated": sum(e.origin == "generated" for e in self.examples),
        }


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()[:8], "big")


def split_of(tenant: str, group: str, holdout_percent: int) -> Split:
    """The split a group belongs to: deterministic, the same on every machine and in every run."""
    return "heldout" if _hash(tenant, group) % 100 < holdout_percent else "train"


def cite(text: str, number: int, *, max_chars: int = MAX_ANSWER_CHARS) -> str:
    """``text`` cut to whole sentences within ``max_chars`` (at least one), each sentence ending with ``[number]``
    before its final punctuation, as the rag_qa template asks."""
    sentences = [s for s in split_sentences(" ".join(text.split())) if s]
    kept: list[str] = []
    used = 0
    for sentence in sentences:
        if kept and used + len(sentence) > max_chars:
            break
        kept.append(sentence)
        used += len(sentence) + 1
    cited = []
    for sentence in kept:
        body, end = (sentence[:-1], sentence[-1]) if sentence[-1] in ".!?" else (sentence, ".")
        cited.append(f"{body.rstrip()} [{number}]{end}")
    return " ".join(cited)


def _trim(passage: Passage) -> Passage:
    if len(passage.text) <= MAX_SOURCE_CHARS:
        return passage
    cut = passage.text[:MAX_SOURCE_CHARS]
    end = max(cut.rfind(". "), cut.rfind("\n"))
    return msgspec.structs.replace(passage, text=cut[: end + 1] if end > MAX_SOURCE_CHARS // 2 else cut)


class _Pool:
    """The tenant's passages, with their content words for picking distractors like retrieval would."""

    def __init__(self, passages: Sequence[Passage]) -> None:
        self.passages = [_trim(p) for p in passages if p.text.strip()]
        self.words = [content_words(p.text + " " + " ".join((p.title, *p.heading_path))) for p in self.passages]

    def similar(self, question: str, count: int, *, exclude_docs: Iterable[str] = (), salt: str = "") -> list[Passage]:
        """The ``count`` passages sharing the most content words with ``question`` (ties broken by hash), none
        from ``exclude_docs``: the look of a retrieval that missed the answer."""
        if count <= 0:
            return []
        excluded = set(exclude_docs)
        words = content_words(question)
        scored = [
            (-len(words & self.words[i]), _hash(salt, p.chunk_id), i)
            for i, p in enumerate(self.passages)
            if p.doc_id not in excluded
        ]
        scored.sort()
        return [self.passages[i] for _, _, i in scored[:count]]


def _answer_passage(case: GoldenCase, pool: _Pool) -> Passage | None:
    for item in case.relevant:
        snippet = " ".join((item.text_snippet or "").split())
        for passage in pool.passages:
            if chunk_matches(passage, item) and (
                not snippet or snippet[:80].lower() in " ".join(passage.text.split()).lower()
            ):
                return passage
    for item in case.relevant:  # the corpus was not given, or no chunk holds it: the snippet is the source
        if item.text_snippet:
            return Passage(
                chunk_id=f"golden:{case.id}",
                doc_id=item.doc_id or item.source_uri or case.id,
                text=item.text_snippet,
                score=1.0,
                source_uri=item.source_uri or "",
            )
    return None


def _snippet_passages(golden: Sequence[GoldenCase], passages: Sequence[Passage]) -> list[Passage]:
    """The golden cases' snippets that no given chunk holds, as passages: a corpus-less run still has distractors
    (and answers for every case). Documents that have chunks are left to their chunks."""
    have = {p.doc_id for p in passages}
    found: list[Passage] = []
    for case in golden:
        source = _answer_passage(case, _Pool([])) if not case.expect_refusal else None
        if source is not None and source.doc_id not in have:
            found.append(source)
    return found


def _heading_question(passage: Passage) -> str | None:
    heading = next((h for h in reversed(passage.heading_path) if h.strip()), "") or passage.title
    heading = re.sub(r"[¶#]+$", "", heading).strip().rstrip(":")
    if len(heading) < 4:
        return None
    if heading.endswith("?"):
        return heading
    return f"What does the documentation say about {heading}?"


def _first_sentences(passage: Passage) -> str:
    sentences = [s for s in split_sentences(" ".join(passage.text.split())) if len(s) >= MIN_SENTENCE_CHARS]
    return " ".join(sentences[:2])


class _Builder:
    def __init__(self, tenant: str, config: FinetuneConfig, template: PromptTemplate, pool: _Pool) -> None:
        self.tenant = tenant
        self.config = config
        self.template = template
        self.pool = pool
        self.examples: list[TrainingExample] = []

    def add(
        self,
        *,
        example_id: str,
        group: str,
        origin: Literal["golden", "generated"],
        question: str,
        answer_source: Passage | None,
        answer_text: str,
        case: GoldenCase | None = None,
        without_docs: Sequence[str] = (),
    ) -> None:
        """One example; ``answer_source`` None means the sources do not hold the answer (target: the refusal), and
        ``without_docs`` keeps the documents that do hold it out of the sources."""
        count = self.config.sources_per_example
        exclude = [answer_source.doc_id] if answer_source is not None else list(without_docs)
        salt = f"{self.tenant}/{example_id}"
        distractors = self.pool.similar(question, count - (answer_source is not None), exclude_docs=exclude, salt=salt)
        sources = list(distractors)
        if answer_source is not None:
            sources.insert(_hash(salt, "position") % (len(sources) + 1), answer_source)
        if not sources:
            return
        context = build_context(sources, max_tokens=self.config.max_seq_len, max_sources=count)
        if answer_source is not None and answer_source not in context.sources:
            return  # the answer did not fit the budget: the example would teach citing what is not there
        if answer_source is not None:
            answer = cite(answer_text, context.sources.index(answer_source) + 1)
            if not answer:
                return
        else:
            answer = REFUSAL
        prompt = self.template.render(sources=context.text, question=question)
        text = render_chat(self.config.base_model, [ChatMessage("user", prompt)])
        self.examples.append(
            TrainingExample(
                id=example_id,
                group=group,
                origin=origin,
                split=split_of(self.tenant, group, self.config.holdout_percent),
                question=question,
                sources=context.sources,
                prompt=prompt,
                text=text,
                answer=answer,
                expect_refusal=answer_source is None,
                reference_answer=answer_text if answer_source is not None else "",
                key_facts=list(case.key_facts) if case is not None and answer_source is not None else [],
                key_fact_alternatives=dict(case.key_fact_alternatives)
                if case is not None and answer_source is not None
                else {},
            )
        )

    def wants_refusal_variant(self, example_id: str) -> bool:
        return _hash(self.tenant, example_id, "refusal") % 1000 < self.config.refusal_share * 1000


def default_template() -> PromptTemplate:
    """The shipped ``rag_qa`` prompt, as the registry installs it (version "1"); a run normally passes the
    tenant's active version instead."""
    spec = builtin_templates()["rag_qa"]
    return PromptTemplate.create("rag_qa", "1", spec.template, description=spec.description, variables=spec.variables)


def build_training_set(
    tenant: str,
    golden: Sequence[GoldenCase],
    passages: Sequence[Passage],
    config: FinetuneConfig,
    *,
    template: PromptTemplate | None = None,
) -> TrainingSet:
    """Examples from ``golden`` and from questions generated over ``passages`` (the tenant's chunks), each marked
    train or held-out; at most ``config.max_examples`` (golden first, then generated, in a hash order)."""
    config.validate()
    pool = _Pool([*passages, *_snippet_passages(golden, passages)])
    builder = _Builder(tenant, config, template or default_template(), pool)
    for case in golden:
        group = f"golden:{case.id}"
        if case.expect_refusal:
            builder.add(example_id=case.id, group=group, origin="golden", question=case.question,
                        answer_source=None, answer_text="")  # fmt: skip
            continue
        source = _answer_passage(case, pool)
        if source is None or not case.reference_answer.strip():
            continue
        builder.add(example_id=case.id, group=group, origin="golden", question=case.question,
                    answer_source=source, answer_text=case.reference_answer, case=case)  # fmt: skip
        if builder.wants_refusal_variant(case.id):
            answer_docs = [source.doc_id, *(r.doc_id for r in case.relevant if r.doc_id)]
            builder.add(example_id=f"{case.id}#refusal", group=group, origin="golden", question=case.question,
                        answer_source=None, answer_text="", without_docs=answer_docs)  # fmt: skip
    if config.generated_per_chunk > 0:
        ordered = sorted(pool.passages, key=lambda p: _hash(tenant, "generate", p.chunk_id))
        for passage in ordered:
            question = _heading_question(passage)
            answer_text = _first_sentences(passage)
            if question is None or not answer_text:
                continue
            example_id = f"gen:{passage.chunk_id}"
            group = f"doc:{passage.doc_id}"
            builder.add(example_id=example_id, group=group, origin="generated", question=question,
                        answer_source=passage, answer_text=answer_text)  # fmt: skip
            if builder.wants_refusal_variant(example_id):
                builder.add(example_id=f"{example_id}#refusal", group=group, origin="generated", question=question,
                            answer_source=None, answer_text="", without_docs=[passage.doc_id])  # fmt: skip
    examples = builder.examples[: config.max_examples]
    return TrainingSet(tenant=tenant, base_model=config.base_model, examples=examples, data_hash=data_hash(examples))


_encoder = msgspec.json.Encoder(order="deterministic")


def data_hash(examples: Sequence[TrainingExample]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(_encoder.encode(example))
        digest.update(b"\n")
    return digest.hexdigest()


def to_jsonl(examples: Sequence[TrainingExample]) -> bytes:
    """The examples as JSON lines (what the training job reads: ``text``, ``answer`` and ``split`` per line)."""
    return b"".join(_encoder.encode(e) + b"\n" for e in examples)


def from_jsonl(data: bytes) -> list[TrainingExample]:
    decoder = msgspec.json.Decoder(TrainingExample)
    return [decoder.decode(line) for line in data.splitlines() if line.strip()]
