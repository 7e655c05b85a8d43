"""Turn a document's bytes into plain text plus its heading structure.

Every loader returns a :class:`LoadedDocument`: the text chunks are cut from, and the sections (heading path and
character span) so each chunk can say where in the document it came from. For txt/md/rst the text *is* the source,
so char offsets point into the original file; for HTML they point into the cleaned text, and each section carries
the HTML anchor (``id``) of its heading so a citation can link to ``page.html#anchor``.

Bytes are decoded here, not by the sender (:func:`decode_text`): a BOM, then a declared charset (the content type's,
an XML declaration, a ``<meta>``), then UTF-8, then Windows-1252 for text that is not UTF-8. HTML pages lose the
navigation their generator wraps around the content (:data:`_CHROME`: Sphinx, DocBook XSL and gtk-doc, AsciiDoc and
Asciidoctor, Doxygen, Texinfo), so chunks hold the manual's text and not "Next | Prev | Up" lines.
"""

from __future__ import annotations

import codecs
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

CONTENT_TYPES: dict[str, str] = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".rst": "text/x-rst",
    ".html": "text/html",
    ".htm": "text/html",
    ".xhtml": "application/xhtml+xml",
    ".pdf": "application/pdf",
}


class LoadError(ValueError):
    """The document cannot be turned into text (corrupt, wrong encoding, unsupported type): a dead letter."""


@dataclass(frozen=True)
class Section:
    heading_path: tuple[str, ...]
    start: int
    end: int
    anchor: str = ""


@dataclass
class LoadedDocument:
    text: str
    title: str
    sections: list[Section] = field(default_factory=list)


def content_type_for(path: str) -> str | None:
    return CONTENT_TYPES.get(PurePosixPath(path).suffix.lower())


def load(content: str, content_type: str, *, raw: bytes = b"", title: str = "", source_uri: str = "") -> LoadedDocument:
    """Dispatch on the media type; text sent as ``raw`` bytes is decoded by :func:`decode_text` (a ``charset``
    parameter of ``content_type`` is the declared encoding)."""
    kind, _, parameters = content_type.partition(";")
    kind = kind.strip().lower()
    if kind == "application/pdf":
        return load_pdf(raw or content.encode("latin-1"), title=title)
    loader = _TEXT_LOADERS.get(kind)
    if loader is None:
        raise LoadError(f"unsupported content type {content_type!r}")
    if raw and not content:
        charset = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", parameters, re.IGNORECASE)
        content = decode_text(raw, declared=charset.group(1) if charset else "", markup=kind in _MARKUP_TYPES,
                              source=source_uri)  # fmt: skip
    content = content.removeprefix("\ufeff")
    if "\x00" in content:
        raise LoadError(f"{source_uri or 'document'} contains NUL bytes: binary data sent as {kind}")
    doc = loader(content, title)
    if not doc.title:
        doc.title = PurePosixPath(source_uri).stem if source_uri else ""
    return doc


# --- bytes to text ---------------------------------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# An XML declaration in UTF-16 without a BOM (XML 1.0 appendix F): "<?" with a zero byte after or before each.
_UTF16_XML = ((b"<\x00?\x00", "utf-16-le"), (b"\x00<\x00?", "utf-16-be"))
_XML_DECLARED = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")
_META_DECLARED = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", re.IGNORECASE)
_PRESCAN_BYTES = 4096  # the <meta> of a Texinfo page follows a long licence comment
# Labels that name Windows-1252 in practice (the WHATWG encoding standard reads them all as windows-1252).
_WINDOWS_1252 = {"latin-1", "ascii", "cp1252"}
_MARKUP_TYPES = {"text/html", "application/xhtml+xml"}
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_MAX_CONTROL_SHARE = 0.01


def _windows_1252_gaps(error: UnicodeError) -> tuple[str, int]:
    """The five bytes Windows-1252 leaves undefined read as their Latin-1 code points, as browsers do."""
    assert isinstance(error, UnicodeDecodeError)
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("ragstream-windows-1252", _windows_1252_gaps)


def decode_text(raw: bytes, *, declared: str = "", markup: bool = False, source: str = "") -> str:
    """Bytes to text: a BOM wins; then ``declared`` (or, for markup, the XML declaration or ``<meta>`` charset)
    when the bytes decode with it; then UTF-8; then Windows-1252 when the result reads as text, not binary.

    Raises :class:`LoadError` naming what was tried when none of these gives text.
    """
    name = source or "document"
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return _decode_strict(raw[len(bom) :], encoding, f"{name} starts with a {encoding} byte order mark")
    for prefix, encoding in _UTF16_XML:
        if raw.startswith(prefix):
            return _decode_strict(raw, encoding, f"{name} starts with an XML declaration in {encoding}")
    label = declared
    encoding = _codec_name(label)
    if not label and markup:
        head = raw[:_PRESCAN_BYTES]
        found = _XML_DECLARED.match(head) or _META_DECLARED.search(head)
        label = found.group(1).decode("ascii") if found else ""
        encoding = _codec_name(label)
        if encoding.startswith(("utf-16", "utf-32")):
            encoding = "utf-8"  # the declaration was readable as ASCII, so the bytes are not UTF-16/32
    tried: list[str] = []
    if encoding:
        text = _decode_lenient(raw, encoding)
        if text is not None and not _looks_binary(text):
            return text
        tried.append(f"declared {label}")
    elif label:
        tried.append(f"declared {label} (an unknown encoding)")
    text = _decode_lenient(raw, "utf-8") if encoding != "utf-8" else None
    if text is not None:
        return text
    text = _decode_lenient(raw, "cp1252")
    if text is not None and not _looks_binary(text):
        return text
    tried.extend(["UTF-8", "Windows-1252"] if encoding != "utf-8" else ["Windows-1252"])
    raise LoadError(f"{name} is not text in any encoding tried ({', '.join(tried)}): binary or undecodable bytes")


def _codec_name(label: str) -> str:
    if not label:
        return ""
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return ""
    return "cp1252" if name in _WINDOWS_1252 else name


def _decode_lenient(raw: bytes, encoding: str) -> str | None:
    """``raw`` in ``encoding``, or None where it is not; Windows-1252's undefined bytes read as Latin-1."""
    try:
        return raw.decode(encoding, errors="ragstream-windows-1252" if encoding == "cp1252" else "strict")
    except (UnicodeDecodeError, LookupError):
        return None


def _decode_strict(raw: bytes, encoding: str, why: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise LoadError(f"{why} but is not valid {encoding}: {exc.reason} at byte {exc.start}") from None


def _looks_binary(text: str) -> bool:
    """NUL, or more control characters than text has (tabs, newlines, form feeds and ESC are allowed)."""
    if "\x00" in text:
        return True
    return len(_CONTROL.findall(text)) > _MAX_CONTROL_SHARE * len(text)


# --- plain text ------------------------------------------------------------------------------------------------


def load_text(content: str, title: str = "") -> LoadedDocument:
    if not title:
        first = next((line.strip() for line in content.splitlines() if line.strip()), "")
        title = first[:120]
    return LoadedDocument(content, title, [Section((), 0, len(content))])


def _sections_from_headings(content: str, headings: list[tuple[int, int, str]], title: str) -> LoadedDocument:
    """Sections from ``(offset, level, heading)``: each runs from its heading to the next one."""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    if not headings or headings[0][0] > 0:
        sections.append(Section((), 0, headings[0][0] if headings else len(content)))
    for i, (offset, level, text) in enumerate(headings):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, text))
        end = headings[i + 1][0] if i + 1 < len(headings) else len(content)
        sections.append(Section(tuple(h for _, h in stack), offset, end, _slug(text)))
    if not title and headings:
        title = min(headings, key=lambda h: (h[1], h[0]))[2]
    return LoadedDocument(content, title, [s for s in sections if s.end > s.start])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- markdown --------------------------------------------------------------------------------------------------

_MD_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_MD_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


_MD_FRONT_MATTER = re.compile(r"\A(---|\+\+\+)[ \t]*\r?\n.*?^(?:\1|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.MULTILINE | re.DOTALL)


def load_markdown(content: str, title: str = "") -> LoadedDocument:
    """ATX and setext headings outside code fences; YAML/TOML front matter is text before the first heading (its
    closing ``---`` would otherwise read as a setext underline)."""
    headings: list[tuple[int, int, str]] = []
    front_matter = _MD_FRONT_MATTER.match(content)
    offset = front_matter.end() if front_matter else 0
    fence = ""
    previous: tuple[int, str] | None = None  # (offset, text) of the last plain line, for setext headings
    for line in content[offset:].splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        fence_match = _MD_FENCE.match(stripped)
        if fence_match:
            marker = fence_match.group(1)
            if not fence:
                fence = marker[0] * 3
            elif marker.startswith(fence):
                fence = ""
            previous = None
        elif not fence:
            atx = _MD_ATX.match(stripped)
            setext = _MD_SETEXT.match(stripped)
            if atx:
                headings.append((offset, len(atx.group(1)), atx.group(2).strip()))
                previous = None
            elif setext and previous is not None:
                headings.append((previous[0], 1 if setext.group(1)[0] == "=" else 2, previous[1]))
                previous = None
            else:
                previous = (offset, stripped.strip()) if stripped.strip() else None
        offset += len(line)
    return _sections_from_headings(content, headings, title)


# --- reStructuredText ------------------------------------------------------------------------------------------

_RST_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")


def load_rst(content: str, title: str = "") -> LoadedDocument:
    """Headings are a text line underlined (optionally overlined) with punctuation; levels in order of first use."""
    lines = content.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    styles: list[tuple[str, bool]] = []
    headings: list[tuple[int, int, str]] = []
    i = 0
    while i < len(lines) - 1:
        text = lines[i].strip()
        under = lines[i + 1].rstrip("\r\n")
        match = _RST_ADORNMENT.match(under)
        if text and match and not _RST_ADORNMENT.match(lines[i].rstrip("\r\n")) and len(under.strip()) >= len(text):
            overlined = i > 0 and bool(_RST_ADORNMENT.match(lines[i - 1].rstrip("\r\n")))
            style = (match.group(1), overlined)
            if style not in styles:
                styles.append(style)
            start = offsets[i - 1] if overlined else offsets[i]
            headings.append((start, styles.index(style) + 1, text))
            i += 2
            continue
        i += 1
    return _sections_from_headings(content, headings, title)


# --- HTML ------------------------------------------------------------------------------------------------------

_DROP_TAGS = {"script", "style", "noscript", "nav", "header", "footer", "aside", "form", "template", "svg", "button"}
_DROP_CLASSES = {"headerlink", "sphinxsidebar", "related", "footer", "clearer"}
_BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "li", "ul", "ol", "dl", "dt", "dd", "pre", "blockquote", "figure",
    "figcaption", "table", "thead", "tbody", "tr", "caption", "hr", "br", "address", "details", "summary",
}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_WS = re.compile(r"\s+")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


def _class(name: str) -> str:
    """XPath test for one class among an element's classes."""
    return f'contains(concat(" ", normalize-space(@class), " "), " {name} ")'


@dataclass(frozen=True)
class _Chrome:
    """What one HTML generator wraps around the content: XPaths of elements to remove (their tails stay), and
    XPaths of elements that are headings in all but tag (Doxygen writes a page's title as a ``div``)."""

    remove: tuple[str, ...] = ()
    headings: tuple[tuple[str, int], ...] = ()


# Keyed by a word of the page's <meta name="generator"> (or of a comment the generator leaves); a page of none of
# these (Sphinx, hand-written) gets only the generic cleaning: script/nav/header/footer tags, Sphinx's classes.
_CHROME: dict[str, _Chrome] = {
    # DocBook XSL chunked output: Prev/Up/Next tables above and below, a table of contents and lists of tables;
    # gtk-doc (DocBook XSL underneath) has its own navigation table.
    "docbook": _Chrome(
        remove=(
            f"//div[{_class('navheader')} or {_class('navfooter')} or {_class('toc')}]",
            '//div[starts-with(@class, "list-of-")]',
            f"//table[{_class('navigation')}]",
        )
    ),
    # AsciiDoc / Asciidoctor: a table of contents and a "Last updated" footer; Asciidoctor's author/revision line.
    "asciidoc": _Chrome(
        remove=('//*[@id="toc" or @id="toctitle" or @id="footer"]', f'//div[@id="header"]/div[{_class("details")}]')
    ),
    # Doxygen: the title bar, menus, search box, tree view and breadcrumbs, the member summary links, tooltips,
    # permalinks and "More..." links; the title is a div, and a member's heading sits under "... Documentation".
    "doxygen": _Chrome(
        remove=(
            '//*[@id="top" or @id="nav-path" or @id="side-nav" or @id="MSearchSelectWindow"'
            ' or @id="MSearchResultsWindow"]',
            f"//div[{_class('summary')} or {_class('ttc')} or {_class('ingroups')} or {_class('navpath')}]",
            f"//span[{_class('permalink')}]",
            '//a[normalize-space() = "More..."]',
        ),
        headings=((f"//div[{_class('headertitle')}]/div[{_class('title')}]", 1), (f"//h2[{_class('memtitle')}]", 3)),
    ),
    # Texinfo (makeinfo / texi2any, texi2html): Next/Previous/Up panels, tables of contents, node menus, and the
    # "Jump to:" letter bars of index pages.
    "texinfo": _Chrome(
        remove=(
            f"//div[{_class('header')} or {_class('nav-panel')} or {_class('contents')}"
            f" or {_class('shortcontents')} or {_class('element-contents')} or {_class('menu')}]",
            f"//ul[{_class('section-toc')} or {_class('mini-toc')}]",
            f"//table[{_class('menu')} or .//a[{_class('summary-letter')}]]",
        )
    ),
}
_GENERATOR_WORDS = (
    ("docbook", "docbook"), ("gtk-doc", "docbook"), ("asciidoc", "asciidoc"), ("doxygen", "doxygen"),
    ("makeinfo", "texinfo"), ("texinfo", "texinfo"), ("texi2any", "texinfo"), ("texi2html", "texinfo"),
)  # fmt: skip


def html_generator(tree: object) -> str:
    """Which known generator wrote the page ("" for none): its <meta name="generator">, or the "Created by" /
    "Generated by" comment Texinfo and older Doxygen leave instead."""
    from lxml import html as lxml_html

    assert isinstance(tree, lxml_html.HtmlElement)
    metas = tree.xpath('//meta[translate(@name, "GENERATOR", "generator") = "generator"]/@content')
    comments = tree.xpath("(//comment())[position() <= 20]")
    signs = [str(meta).lower() for meta in (metas if isinstance(metas, list) else [])]
    for comment in comments if isinstance(comments, list) else []:
        text = str(getattr(comment, "text", "") or "").lower()
        if "generated by" in text or "created by" in text:
            signs.append(text)
    for sign in signs:
        for word, generator in _GENERATOR_WORDS:
            if word in sign:
                return generator
    return ""


def _remove_chrome(tree: object, chrome: _Chrome) -> None:
    from lxml import html as lxml_html

    assert isinstance(tree, lxml_html.HtmlElement)
    for path in chrome.remove:
        found = tree.xpath(path)
        for element in found if isinstance(found, list) else []:
            if isinstance(element, lxml_html.HtmlElement) and element.getparent() is not None:
                element.drop_tree()
    for path, level in chrome.headings:
        found = tree.xpath(path)
        for element in found if isinstance(found, list) else []:
            if isinstance(element, lxml_html.HtmlElement):
                element.tag = f"h{level}"


def _heading_anchor(element: object) -> str:
    """The id a link to this heading uses: its own, its <section>'s (Sphinx), an empty <a>/<span> marker inside
    it (DocBook) or just before it (Texinfo, Doxygen)."""
    from lxml import html as lxml_html

    assert isinstance(element, lxml_html.HtmlElement)
    anchor = element.get("id") or ""
    parent = element.getparent()
    if not anchor and parent is not None and parent.tag == "section":
        anchor = parent.get("id") or ""
    if anchor:
        return anchor
    markers = element.xpath(".//a[@id or @name] | .//span[@id]")
    before = element.getprevious()
    if before is not None and before.tag in ("a", "span") and not before.text_content().strip():
        markers = [*(markers if isinstance(markers, list) else []), before]
    for marker in markers if isinstance(markers, list) else []:
        if isinstance(marker, lxml_html.HtmlElement) and (marker.get("id") or marker.get("name")):
            return marker.get("id") or marker.get("name") or ""
    return ""


class _HtmlText:
    """Walks the element tree once, writing paragraphs separated by blank lines and recording heading sections."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.line: list[str] = []
        self.prefix = ""  # a list marker waiting for the item's first text
        self.headings: list[tuple[int, int, str, str]] = []  # offset, level, text, anchor

    def flush(self, separator: str = "\n\n") -> None:
        text = _WS.sub(" ", "".join(self.line)).strip()
        self.line = []
        if text:
            self.write(self.prefix + text, separator)
            self.prefix = ""

    def write(self, text: str, separator: str = "\n\n") -> None:
        if self.length:
            self.parts.append(separator)
            self.length += len(separator)
        self.parts.append(text)
        self.length += len(text)

    def walk(self, element: object) -> None:
        from lxml import html as lxml_html

        if not isinstance(getattr(element, "tag", None), str):  # a comment or processing instruction
            self._tail(element)
            return
        assert isinstance(element, lxml_html.HtmlElement)
        tag = element.tag
        classes = set((element.get("class") or "").split())
        if tag in _DROP_TAGS or classes & _DROP_CLASSES:
            self._tail(element)
            return
        level = _HEADINGS.get(tag)
        if level is not None:
            self.flush()
            text = _WS.sub(" ", element.text_content()).replace("¶", "").strip()
            if text:
                self.headings.append((self.length + (2 if self.length else 0), level, text, _heading_anchor(element)))
                self.write(text)
            self._tail(element)
            return
        if tag == "pre":
            self.flush()
            code = element.text_content().strip("\n")
            if code.strip():
                self.write(code)
            self._tail(element)
            return
        block = tag in _BLOCK_TAGS
        if block:
            self.flush()
            if tag == "li":
                self.prefix = "- "
        elif tag in ("td", "th"):
            self.line.append(" | " if self.line else "")
        if element.text:
            self.line.append(element.text)
        for child in element:
            self.walk(child)
        if block:
            self.flush()
        self._tail(element)

    def _tail(self, element: object) -> None:
        tail = getattr(element, "tail", None)
        if tail:
            self.line.append(tail)


def load_html(content: str, title: str = "") -> LoadedDocument:
    """HTML or XHTML text (an XML declaration is dropped: the text is already decoded)."""
    from lxml import etree
    from lxml import html as lxml_html

    try:
        tree = lxml_html.document_fromstring(_XML_DECLARATION.sub("", content, count=1))
    except (etree.ParserError, ValueError) as exc:
        raise LoadError(f"unparseable HTML: {exc}") from None
    chrome = _CHROME.get(html_generator(tree))
    if chrome is not None:
        _remove_chrome(tree, chrome)
    if not title:
        titles = tree.xpath("//title")
        first = titles[0] if isinstance(titles, list) and titles else None
        if isinstance(first, lxml_html.HtmlElement):
            title = _WS.sub(" ", first.text_content()).strip()
    found = tree.xpath('//*[@role="main"] | //main | //article')
    if not found:
        found = tree.xpath('//div[contains(concat(" ", normalize-space(@class), " "), " body ")]')
    if not found:
        found = tree.xpath("//body")
    elements = [e for e in (found if isinstance(found, list) else []) if isinstance(e, lxml_html.HtmlElement)]
    root = elements[0] if elements else tree
    builder = _HtmlText()
    builder.walk(root)
    builder.flush()
    text = "".join(builder.parts)
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    heads = builder.headings
    if not heads or heads[0][0] > 0:
        sections.append(Section((), 0, heads[0][0] if heads else len(text)))
    for i, (offset, level, heading, anchor) in enumerate(heads):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        sections.append(Section(tuple(h for _, h in stack), offset, end, anchor))
    if not title and heads:
        title = heads[0][2]
    return LoadedDocument(text, title, [s for s in sections if s.end > s.start])


# --- PDF -------------------------------------------------------------------------------------------------------


# PDFium is not thread-safe, not even across documents, and the worker loads documents in threads: every call into
# it holds this lock, and every PDFium object is closed inside it (never left to a finalizer in another thread).
_PDFIUM = threading.Lock()
_PDF_HYPHEN = "\x02"  # PDFium's mark for a word hyphenated at a line end; the word is joined again


def load_pdf(raw: bytes, title: str = "") -> LoadedDocument:
    """One section per page (``Page N``), text by PDFium (pypdfium2): unlike pure-Python extractors it recovers
    the word spaces TeX-made PDFs (pdfTeX, dblatex) draw as gaps, not characters.

    A PDF without any text (scanned pages) is a :class:`LoadError`: there is nothing to index, and the sender
    should hear why.
    """
    import pypdfium2 as pdfium

    pages: list[str] = []
    with _PDFIUM:
        try:
            document = pdfium.PdfDocument(raw)
        except pdfium.PdfiumError as exc:
            raise LoadError(f"unreadable PDF: {exc}") from None
        try:
            meta_title = document.get_metadata_value("Title")
            for index in range(len(document)):
                page = document[index]
                textpage = page.get_textpage()
                try:
                    pages.append(textpage.get_text_bounded())
                finally:
                    textpage.close()
                    page.close()
        except pdfium.PdfiumError as exc:
            raise LoadError(f"unreadable PDF: page {len(pages) + 1}: {exc}") from None
        finally:
            document.close()
    pages = [page.replace("\r\n", "\n").replace(_PDF_HYPHEN + "\n", "").replace(_PDF_HYPHEN, "") for page in pages]
    if pages and not any(page.strip() for page in pages):
        raise LoadError(f"PDF has {len(pages)} pages but no text layer (scanned images?)")
    parts: list[str] = []
    sections: list[Section] = []
    length = 0
    for number, page in enumerate(pages, start=1):
        if length:
            parts.append("\n\n")
            length += 2
        sections.append(Section((f"Page {number}",), length, length + len(page)))
        parts.append(page)
        length += len(page)
    return LoadedDocument("".join(parts), title or meta_title.strip(), [s for s in sections if s.end > s.start])


_TEXT_LOADERS: dict[str, Callable[[str, str], LoadedDocument]] = {
    "text/plain": load_text,
    "text/markdown": load_markdown,
    "text/x-markdown": load_markdown,
    "text/x-rst": load_rst,
    "text/prs.fallenstein.rst": load_rst,
    "text/html": load_html,
    "application/xhtml+xml": load_html,
}
