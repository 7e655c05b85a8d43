"""The training-set builder: the pipeline's prompt format, cited or refusing targets, a held-out split that never
trains, determinism."""

from __future__ import annotations

from pathlib import Path

import msgspec

from processors.adapters.chat_formats import render_chat
from processors.citations import REFUSAL, cited_numbers
from processors.evaluation.golden import GoldenCase, Relevant, load_golden
from processors.finetune.dataset import build_training_set, cite, default_template, from_jsonl, split_of, to_jsonl
from processors.generation import ChatMessage
from schemas.events import Passage
from schemas.finetune import FinetuneConfig

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "benchmarks" / "eval" / "golden" / "python_docs.jsonl"


def _passages() -> list[Passage]:
    topics = [
        ("library/pickle.html", "pickle", "Data stream format", "Currently the default protocol is 4, first "
         "introduced in Python 3.4. It is the default since Python 3.8. Protocol 5 adds out-of-band data."),
        ("library/socket.html", "socket", "create_connection", "Connect to a TCP service. If no timeout is supplied, "
         "the global default timeout setting returned by getdefaulttimeout() is used."),
        ("library/json.html", "json", "Basic Usage", "If indent is a non-negative integer, JSON array elements and "
         "object members will be pretty-printed with that indent level. Separators default to (', ', ': ')."),
        ("library/os.html", "os", "Process Parameters", "These functions and data items provide information and "
         "operate on the current process and user. The environ mapping holds the environment."),
        ("library/re.html", "re", "Regular Expression Syntax", "A regular expression specifies a set of strings that "
         "matches it. The functions in this module check whether a string matches."),
    ]  # fmt: skip
    return [
        Passage(chunk_id=f"c{i}", doc_id=doc, text=text, score=0.0, title=title, heading_path=[heading])
        for i, (doc, title, heading, text) in enumerate(topics)
    ]


def _golden() -> list[GoldenCase]:
    return [
        GoldenCase(
            id="g-pickle",
            question="What protocol does pickle use by default?",
            reference_answer="The default protocol is 4. It was introduced in Python 3.4.",
            relevant=[Relevant(doc_id="library/pickle.html", text_snippet="Currently the default protocol is 4")],
            key_facts=["4"],
        ),
        GoldenCase(id="g-out", question="Who won the 1998 football world cup?", expect_refusal=True),
    ]


def test_examples_are_the_pipelines_prompt_with_a_cited_answer_or_the_refusal() -> None:
    config = FinetuneConfig(refusal_share=0.0, sources_per_example=3)
    data = build_training_set("acme", _golden(), _passages(), config)
    by_id = {e.id: e for e in data.examples}
    pickle = by_id["g-pickle"]
    assert len(pickle.sources) == 3
    number = next(n for n, p in enumerate(pickle.sources, start=1) if p.doc_id == "library/pickle.html")
    assert cited_numbers(pickle.answer) == [number]
    assert pickle.answer == f"The default protocol is 4 [{number}]. It was introduced in Python 3.4 [{number}]."
    assert f"[{number}] pickle > Data stream format" in pickle.prompt
    assert "Question: What protocol does pickle use by default?" in pickle.prompt
    assert pickle.text == render_chat("llm_small", [ChatMessage("user", pickle.prompt)])
    assert pickle.text.endswith("<|im_start|>assistant\n")
    assert pickle.prompt == default_template().render(sources=pickle.prompt.split("<sources>\n")[1].split(
        "\n</sources>")[0], question=pickle.question)  # fmt: skip
    assert pickle.key_facts == ["4"] and not pickle.expect_refusal
    out = by_id["g-out"]
    assert out.answer == REFUSAL and out.expect_refusal
    # generated questions: the chunk's heading asked, its first sentences cited
    generated = [e for e in data.examples if e.origin == "generated"]
    assert len(generated) == 5
    socket = next(e for e in generated if e.id == "gen:c1")
    assert socket.question == "What does the documentation say about create_connection?"
    assert socket.answer.startswith("If no timeout is supplied, the global default timeout")  # short sentences skipped
    assert cited_numbers(socket.answer) == [socket.sources.index(_passages()[1]) + 1]


def test_refusal_variants_drop_the_answer_source_and_stay_in_their_cases_split() -> None:
    data = build_training_set("acme", _golden(), _passages(), FinetuneConfig(refusal_share=0.999))
    by_id = {e.id: e for e in data.examples}
    variant = by_id["g-pickle#refusal"]
    assert variant.answer == REFUSAL and variant.expect_refusal
    assert all(p.doc_id != "library/pickle.html" for p in variant.sources)
    assert variant.split == by_id["g-pickle"].split and variant.group == by_id["g-pickle"].group
    assert not variant.key_facts


def test_held_out_groups_never_train_and_the_split_is_stable() -> None:
    cases = load_golden(GOLDEN)
    config = FinetuneConfig(holdout_percent=25)
    data = build_training_set("acme", cases, [], config)  # no corpus: golden snippets are the sources
    assert data.examples, "the golden set's snippets make examples"
    train_groups = {e.group for e in data.split("train")}
    held_groups = {e.group for e in data.split("heldout")}
    assert train_groups and held_groups and not train_groups & held_groups
    share = len(held_groups) / len(train_groups | held_groups)
    assert 0.15 < share < 0.35
    # the same group lands in the same split for the same tenant, every time; another tenant gets another split
    assert all(split_of("acme", e.group, 25) == e.split for e in data.examples)
    other = {e.group: e.split for e in build_training_set("other", cases, [], config).examples}
    assert any(other[e.group] != e.split for e in data.examples)
    again = build_training_set("acme", cases, [], config)
    assert again.data_hash == data.data_hash and again.examples == data.examples


def test_the_data_hash_follows_the_content_and_jsonl_round_trips() -> None:
    config = FinetuneConfig()
    data = build_training_set("acme", _golden(), _passages(), config)
    changed = _passages()
    changed[3] = msgspec.structs.replace(changed[3], text=changed[3].text + " One more sentence here for the hash.")
    assert build_training_set("acme", _golden(), changed, config).data_hash != data.data_hash
    assert from_jsonl(to_jsonl(data.examples)) == data.examples
    sizes = data.sizes()
    assert sizes["train"] + sizes["heldout"] == len(data.examples)
    assert sizes["golden"] >= 2


def test_cite_cuts_to_whole_sentences_and_marks_each() -> None:
    assert cite("One sentence. Two sentences!", 2) == "One sentence [2]. Two sentences [2]!"
    assert cite("No final stop", 1) == "No final stop [1]."
    long = " ".join(f"Sentence number {i} is here." for i in range(40))
    cited = cite(long, 1, max_chars=100)
    assert len(cited) < 160 and cited.count("[1]") == len(cited.split(". "))


def test_a_corpus_folder_becomes_the_indexers_chunks(tmp_path: Path) -> None:
    from streams.clients.finetune import corpus_passages

    (tmp_path / "guide").mkdir()
    (tmp_path / "guide" / "timeouts.md").write_text(
        "# Timeouts\n\nThe frobnicator timeout is set with FROB_TIMEOUT, in seconds. It defaults to 42.\n"
    )
    (tmp_path / "notes.txt").write_text("Plain notes about resetting: hold the blue button for nine seconds.\n")
    passages = corpus_passages([tmp_path], tenant="acme")
    assert {p.doc_id for p in passages} == {"guide/timeouts.md", "notes.txt"}
    timeout = next(p for p in passages if p.doc_id == "guide/timeouts.md")
    assert "FROB_TIMEOUT" in timeout.text and timeout.chunk_id and timeout.char_end > timeout.char_start
    data = build_training_set("acme", [], passages, FinetuneConfig(refusal_share=0.0))
    assert any(e.origin == "generated" and e.question.endswith("Timeouts?") for e in data.examples)
