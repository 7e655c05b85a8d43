"""The ingest client: which files a tree yields, how progress is shown, and when it stops waiting."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from infra.kafka_admin import ensure_topics
from infra.settings import Settings
from infra.stack import Stack
from streams.clients.ingest import DEFAULT_EXCLUDES, IngestReport, _Progress, discover, format_report, ingest


def sphinx_tree(root: Path) -> Path:
    """The shape of a Sphinx build: pages, their reST copies under _sources, index pages, static files."""
    for name, text in {
        "index.html": "<html><body><h1>Docs</h1><p>Start here.</p></body></html>",
        "library/json.html": "<html><body><h1>json</h1><p>Encode and decode JSON.</p></body></html>",
        "_sources/index.rst.txt": "Docs\n====\n\nStart here.\n",
        "_sources/library/json.rst.txt": "json\n====\n\nEncode and decode JSON.\n",
        "genindex.html": "<html><body><h1>Index</h1></body></html>",
        "genindex-A.html": "<html><body><h1>Index A</h1></body></html>",
        "search.html": "<html><body><h1>Search</h1></body></html>",
        "py-modindex.html": "<html><body><h1>Modules</h1></body></html>",
        "_static/basic.css": "body {}",
    }.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_sphinx_tree_is_indexed_once_as_html_and_the_exclusions_are_counted(tmp_path: Path) -> None:
    sources, excluded = discover([sphinx_tree(tmp_path)], prefix="py/")
    assert sorted(s.doc_id for s in sources) == ["py/index.html", "py/library/json.html"]
    assert excluded == 6  # two reST copies, four index pages; the css is not a document type
    everything, none = discover([tmp_path], exclude=())
    assert none == 0 and len(everything) == 8


def test_a_subset_gets_the_same_doc_ids_as_the_whole_tree_under_root(tmp_path: Path) -> None:
    root = sphinx_tree(tmp_path)
    subset, _ = discover([root / "library"], prefix="py/", root=root)
    whole, _ = discover([root], prefix="py/", root=root)
    assert [s.doc_id for s in subset] == ["py/library/json.html"]
    assert {s.doc_id for s in subset} <= {s.doc_id for s in whole}
    with pytest.raises(ValueError, match="not under --root"):
        discover([root], root=root / "library")


def test_files_linked_from_outside_the_root_keep_the_ids_of_where_they_appear(tmp_path: Path) -> None:
    """Debian's python3.11-doc links _static/jquery.js into /usr/share/javascript: a link out of the root is not an
    error; a linked document is indexed under its place in the tree, and a linked script is not a document."""
    elsewhere = tmp_path / "shared"
    elsewhere.mkdir()
    (elsewhere / "jquery.js").write_text("/* library */")
    (elsewhere / "notes.html").write_text("<html><body><h1>Notes</h1><p>Shared notes.</p></body></html>")
    root = sphinx_tree(tmp_path / "docs")
    (root / "_static" / "jquery.js").symlink_to(elsewhere / "jquery.js")
    (root / "library" / "notes.html").symlink_to(elsewhere / "notes.html")
    sources, _ = discover([root / "library", root / "_static"], prefix="py/", root=root)
    assert sorted(s.doc_id for s in sources) == ["py/library/json.html", "py/library/notes.html"]
    linked = next(s for s in sources if s.doc_id == "py/library/notes.html")
    assert linked.path == (elsewhere / "notes.html").resolve()


def test_without_a_terminal_progress_is_a_line_every_few_seconds_with_rate_and_eta() -> None:
    lines: list[str] = []
    progress = _Progress("lines", 100, every_s=3600.0, write=lines.append)
    report = IngestReport(files=100, indexed=20, skipped=5, chunks=900, seconds=10.0)
    progress.update(report)
    progress.update(report)  # within the interval: no second line
    progress.update(report, final=True)
    assert len(lines) == 2
    assert lines[0] == (
        "[ingest] 25/100 documents (20 indexed, 5 unchanged, 0 failed), 900 chunks, 2.0 docs/s, 90 chunks/s, ETA 38s"
    )


def test_the_report_names_what_was_excluded_and_why_documents_failed() -> None:
    report = IngestReport(files=3, indexed=2, failed=1, excluded=4, exclude=DEFAULT_EXCLUDES, seconds=2.0)
    report.errors.append(("broken.pdf", "LoadError: not a PDF"))
    text = format_report(report)
    assert "4 files excluded by _sources/*" in text and "--no-default-excludes" in text
    assert "error broken.pdf: LoadError: not a PDF" in text


@pytest.mark.services
async def test_with_no_worker_the_client_stops_after_the_idle_timeout_and_says_why(
    stack: Stack, stack_settings: Settings, tmp_path: Path
) -> None:
    # A topic prefix no worker consumes: documents are accepted by Kafka, and nothing acknowledges them.
    lonely = stack_settings.with_changes(topic_prefix=f"nobody{uuid.uuid4().hex[:6]}")
    await ensure_topics(lonely)
    (tmp_path / "a.md").write_text("# A\n\nSome text.\n")
    report = await ingest(lonely, [tmp_path], "acme", idle_timeout_s=3.0, progress=False)
    assert not report.ok and report.sent == 1 and report.timed_out == 1
    assert report.errors == [("a.md", "no acknowledgement for 3s (is a worker running?)")]
    assert 3.0 <= report.seconds < 30.0
