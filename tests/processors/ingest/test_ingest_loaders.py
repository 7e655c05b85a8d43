"""Loaders keep the heading structure, and corrupt input fails with a reason instead of producing garbage."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.ingest.loaders import LoadError, content_type_for, load

PYDOCS = Path("/usr/share/doc/python3.11/html")

MARKDOWN = """Intro line.

# Guide

Some text.

```python
# not a heading
```

## Install

Run it.

Usage
-----

Call it.
"""

RST = """=====
Title
=====

Intro.

Section A
=========

Text A.

Sub A1
------

Text A1.

Section B
=========

Text B.
"""


def test_markdown_sections_follow_headings_and_ignore_code() -> None:
    doc = load(MARKDOWN, "text/markdown")
    paths = [s.heading_path for s in doc.sections]
    assert paths == [(), ("Guide",), ("Guide", "Install"), ("Guide", "Usage")]
    assert doc.title == "Guide"
    install = doc.sections[2]
    assert doc.text[install.start : install.end].startswith("## Install")
    assert "# not a heading" in doc.text[doc.sections[1].start : doc.sections[1].end]


def test_rst_levels_by_adornment_order() -> None:
    doc = load(RST, "text/x-rst")
    assert [s.heading_path for s in doc.sections] == [
        ("Title",),
        ("Title", "Section A"),
        ("Title", "Section A", "Sub A1"),
        ("Title", "Section B"),
    ]
    assert doc.text == RST  # offsets point into the source itself


def test_html_keeps_headings_anchors_and_drops_navigation() -> None:
    html = """<html><head><title>Page</title><script>var x = 1;</script></head><body>
    <nav>menu menu</nav><div role="main"><section id="top"><h1>Top<a class="headerlink" href="#top">¶</a></h1>
    <p>First   paragraph.</p><section id="sub"><h2>Sub</h2><ul><li><p>item one</p></li><li>item two</li></ul>
    <pre>code  line
  indented</pre></section></section></div><footer>foot</footer></body></html>"""
    doc = load(html, "text/html")
    assert doc.title == "Page"
    assert "menu" not in doc.text and "foot" not in doc.text and "var x" not in doc.text and "¶" not in doc.text
    assert "First paragraph." in doc.text
    assert "- item one" in doc.text and "- item two" in doc.text
    assert "code  line\n  indented" in doc.text
    sub = next(s for s in doc.sections if s.heading_path == ("Top", "Sub"))
    assert sub.anchor == "sub"
    assert doc.text[sub.start : sub.end].startswith("Sub")


def test_python_docs_page_has_its_section_structure() -> None:
    page = PYDOCS / "library" / "asyncio-task.html"
    if not page.exists():
        pytest.fail("the Python docs corpus is missing: apt-get install -y python3.11-doc")
    doc = load(page.read_text(), "text/html")
    assert ("Coroutines and Tasks", "Timeouts") in [s.heading_path for s in doc.sections]
    assert "asyncio.wait_for" in doc.text
    assert "Navigation" not in doc.text[:200]


def test_invalid_utf8_and_corrupt_pdf_raise_load_errors() -> None:
    with pytest.raises(LoadError, match="UTF-8"):
        load("", "text/plain", raw=b"\xff\xfe\xfa not text", source_uri="file:///x.txt")
    with pytest.raises(LoadError, match="PDF"):
        load("", "application/pdf", raw=b"%PDF-1.4 this is not really a pdf")
    with pytest.raises(LoadError, match="unsupported"):
        load("x", "application/x-unknown")


def test_content_types_by_extension() -> None:
    assert content_type_for("a/B.HTML") == "text/html"
    assert content_type_for("x.rst") == "text/x-rst"
    assert content_type_for("x.png") is None
