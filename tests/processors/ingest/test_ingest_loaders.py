"""Loaders keep the heading structure, decode what real files declare or leave to be sniffed, drop the navigation
that documentation generators add, and fail with a reason (a LoadError) instead of producing garbage."""

from __future__ import annotations

import io
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


def test_corrupt_pdf_binary_text_and_unknown_types_raise_load_errors() -> None:
    with pytest.raises(LoadError, match="not text in any encoding"):
        load("", "text/plain", raw=bytes(range(256)) * 8, source_uri="file:///x.txt")
    with pytest.raises(LoadError, match="NUL"):
        load("", "text/markdown", raw=b"# Title\n\x00\x00 packed binary", source_uri="file:///x.md")
    with pytest.raises(LoadError, match="utf-16-le byte order mark but is not valid"):
        load("", "text/plain", raw=b"\xff\xfe\x41\x00\x42", source_uri="file:///odd.txt")
    with pytest.raises(LoadError, match="PDF"):
        load("", "application/pdf", raw=b"%PDF-1.4 this is not really a pdf")
    with pytest.raises(LoadError, match="unsupported"):
        load("x", "application/x-unknown")


def test_pdf_without_a_text_layer_is_rejected_with_the_reason() -> None:
    import pypdfium2 as pdfium

    blank = pdfium.PdfDocument.new()
    blank.new_page(595, 842).close()
    buffer = io.BytesIO()
    blank.save(buffer)
    blank.close()
    with pytest.raises(LoadError, match="1 pages but no text layer"):
        load("", "application/pdf", raw=buffer.getvalue())


# --- encodings: what real manuals declare, or leave to be sniffed ---------------------------------------------

XHTML = """<?xml version="1.0" encoding="{encoding}" standalone="no"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" "http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Caf\u00e9 cr\u00e8me</title></head>
<body><div class="section"><h2 class="title"><a id="_na\u00efve"/>Na\u00efve \u201cquotes\u201d</h2>
<p>Pr\u00eat \u00e0 servir \u2014 50 \u20ac.</p></div></body></html>"""


def test_xhtml_with_an_xml_declaration_loads_from_text_and_from_bytes() -> None:
    page = XHTML.format(encoding="UTF-8")
    for doc in (load(page, "text/html"), load("", "application/xhtml+xml", raw=page.encode())):
        assert doc.title == "Caf\u00e9 cr\u00e8me"
        assert "Pr\u00eat \u00e0 servir \u2014 50 \u20ac." in doc.text
        section = next(s for s in doc.sections if s.heading_path == ("Na\u00efve \u201cquotes\u201d",))
        assert section.anchor == "_na\u00efve"


def test_declared_encodings_are_honoured() -> None:
    windows = XHTML.format(encoding="windows-1252").encode("cp1252")
    assert "50 \u20ac" in load("", "text/html", raw=windows).text
    latin = XHTML.format(encoding="ISO-8859-1").replace("\u2014 50 \u20ac", "50 EUR").replace("\u201c", '"')
    latin = latin.replace("\u201d", '"')
    assert "Pr\u00eat \u00e0 servir 50 EUR." in load("", "text/html", raw=latin.encode("latin-1")).text
    meta = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=koi8-r"></head><body>'
    russian = (meta + "<p>\u041f\u0440\u0438\u0432\u0435\u0442</p></body></html>").encode("koi8-r")
    assert load("", "text/html", raw=russian).text == "\u041f\u0440\u0438\u0432\u0435\u0442"
    # the media type's charset parameter is a declaration too, for any text type
    assert load("", "text/plain; charset=iso-8859-15", raw="50 \u20ac".encode("iso-8859-15")).text == "50 \u20ac"


def test_byte_order_marks_decide_the_encoding() -> None:
    text = "# T\u00eate\n\nCorps.\n"
    for raw in (b"\xef\xbb\xbf" + text.encode(), "\ufeff".encode("utf-16-le") + text.encode("utf-16-le"),
                "\ufeff".encode("utf-16-be") + text.encode("utf-16-be")):  # fmt: skip
        doc = load("", "text/markdown", raw=raw)
        assert doc.text == text and [s.heading_path for s in doc.sections] == [("T\u00eate",)]
    # a BOM left in decoded text (the ingest client decodes UTF-8 without removing it) does not hide the heading
    assert load("\ufeff" + text, "text/markdown").title == "T\u00eate"


def test_undeclared_text_that_is_not_utf8_is_read_as_windows_1252() -> None:
    raw = "Caf\u00e9 \u2018cr\u00e8me\u2019 \u2013 \u20ac5\n".encode("cp1252")
    assert load("", "text/plain", raw=raw).text == "Caf\u00e9 \u2018cr\u00e8me\u2019 \u2013 \u20ac5\n"
    # the five bytes Windows-1252 leaves undefined still load (as their Latin-1 code points), as in browsers
    assert load("", "text/plain", raw=b"a\x81b\xe9").text == "a\x81b\u00e9"
    html = "<html><body><p>Ni\u00f1o</p></body></html>".encode("latin-1")
    assert load("", "text/html", raw=html).text == "Ni\u00f1o"


# --- navigation chrome of generators besides Sphinx (the real manuals are in test_ingest_manuals.py) ------------


def test_asciidoctor_toc_details_and_footer_are_dropped() -> None:
    page = """<!DOCTYPE html><html lang="en"><head><meta name="generator" content="Asciidoctor 2.0.18">
    <title>Widget Guide</title></head><body class="article toc2 toc-left"><div id="header"><h1>Widget Guide</h1>
    <div class="details"><span id="author" class="author">A. Writer</span><span id="revdate">2024-01-02</span></div>
    <div id="toc" class="toc2"><div id="toctitle">Table of Contents</div><ul class="sectlevel1"><li>
    <a href="#_setup">Setup</a></li></ul></div></div><div id="content"><div class="sect1"><h2 id="_setup">Setup</h2>
    <div class="sectionbody"><div class="paragraph"><p>Turn the widget on.</p></div></div></div></div>
    <div id="footer"><div id="footer-text">Last updated 2024-01-02 10:00:00 UTC</div></div></body></html>"""
    doc = load(page, "text/html")
    assert doc.text == "Widget Guide\n\nSetup\n\nTurn the widget on."
    assert [(s.heading_path, s.anchor) for s in doc.sections][-1] == (("Widget Guide", "Setup"), "_setup")


def test_texinfo_is_recognised_by_its_comment_when_it_has_no_generator_meta() -> None:
    page = """<html><!-- Created by GNU Texinfo 7.1, https://www.gnu.org/software/texinfo/ --><head>
    <title>Frobs (Manual)</title></head><body><div class="section-level-extent" id="Frobs">
    <div class="nav-panel"><p>Next: <a href="Bars.html">Bars</a>, Up: <a href="index.html">Top</a></p></div>
    <h3 class="section" id="Frobs-1">2.1 Frobs</h3><p>A frob turns.</p><ul class="mini-toc"><li>
    <a href="Small.html">Small frobs</a></li></ul></div></body></html>"""
    doc = load(page, "text/html")
    assert doc.text == "2.1 Frobs\n\nA frob turns."
    assert [(s.heading_path, s.anchor) for s in doc.sections] == [(("2.1 Frobs",), "Frobs-1")]


def test_content_types_by_extension() -> None:
    assert content_type_for("a/B.HTML") == "text/html"
    assert content_type_for("x.rst") == "text/x-rst"
    assert content_type_for("x.png") is None
