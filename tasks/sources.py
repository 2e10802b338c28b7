"""Corpus files by the kind their name tells: text (plain, or compressed with gzip, bzip2, xz or
zstd), a zip archive of corpus files, JSON lines, CSV or Parquet with a named text field, or a
MediaWiki XML dump (Wikipedia's `*-pages-articles*.xml.bz2`).

Every reader streams its file and yields cleaned texts (NFC, `\\n` line ends, only texts with
words); `documents` packs them, separated by blank lines, into documents of at most
DOCUMENT_CHARS characters, so memory never depends on the size of a file, a record or a line.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import html
import json
import logging
import lzma
import re
import unicodedata
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import regex
from backports import zstd  # Python 3.14's compression.zstd

from quijote.errors import QuijoteError, first_line
from storage.tables import QuoteTracker, for_arrow

logger = logging.getLogger(__name__)

DOCUMENT_CHARS = 1 << 24  # a novel is one document; a dump is cut into documents this long
BLOCK_BYTES = 1 << 20  # read at a time
MAX_RECORD_BYTES = 1 << 26  # a longer JSON line or CSV header is refused
Opener = Callable[[], BinaryIO]
# While check() reads: the size of the first piece it reads of a text (the real read warns).
_CHECKING: ContextVar[int | None] = ContextVar("checking", default=None)

DECOMPRESSORS: dict[str, Callable[[BinaryIO], BinaryIO]] = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw),
    ".bz2": bz2.BZ2File,  # multistream files (Wikipedia's) included
    ".xz": lzma.LZMAFile,
    ".zst": zstd.ZstdFile,
}
SUFFIXES = {
    "text": ".txt",
    "zip": ".zip",
    "jsonl": ".jsonl",
    "csv": ".csv",
    "tsv": ".tsv",
    "parquet": ".parquet",
    "wikipedia": ".xml",
}
KINDS = {
    **{suffix: kind for kind, suffix in SUFFIXES.items()},
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
RECORDS = ("jsonl", "csv", "tsv", "parquet")
READ_ERRORS = (
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    zstd.ZstdError,
    zipfile.BadZipFile,
    ET.ParseError,
    pa.ArrowException,
)
_COMPRESSED = "|".join(map(re.escape, DECOMPRESSORS))
_TEXT_FILE = re.compile(rf"\.txt(?:{_COMPRESSED})?$", re.IGNORECASE)
_WIKIPEDIA_PART = re.compile(r"\.xml-p\d+p\d+$")  # enwiki-…-pages-articles1.xml-p1p41242.bz2
_LETTER = regex.compile(r"\p{L}")


@dataclass(frozen=True)
class Format:
    """What a corpus file holds and how it is compressed ("" or a DECOMPRESSORS suffix)."""

    kind: str
    compression: str = ""

    @property
    def suffix(self) -> str:
        """The file name ending that tells this format (a downloaded copy gets it)."""
        return SUFFIXES[self.kind] + self.compression


def file_format(name: str) -> Format:
    """A corpus file's format by its name: its last suffix may name a compression, the one
    before it the kind; a name that tells no kind is text."""
    stem, dot, last = name.lower().rpartition(".")
    compression = f".{last}" if dot and f".{last}" in DECOMPRESSORS else ""
    inner = stem if compression else name.lower()
    kind = KINDS.get(PurePosixPath(inner).suffix, "text")
    if _WIKIPEDIA_PART.search(inner):
        kind = "wikipedia"
    return Format(kind, compression)


@dataclass(frozen=True)
class Reading:
    """How to read a corpus: the text field (or column) of records, and which files of a
    directory or zip archive (a glob on their paths, at any depth; default: .txt files,
    compressed or not). Hidden files and folders are skipped."""

    text_field: str | None = None
    glob: str | None = None

    def __post_init__(self) -> None:
        for option, value in (("--text-field", self.text_field), ("--glob", self.glob)):
            if value is not None and not value.strip():
                raise QuijoteError(f"{option} is empty: give a name or leave it out")

    def selects(self, relative: str) -> bool:
        path = PurePosixPath(relative)
        if any(part.startswith(".") for part in path.parts):
            return False
        if self.glob is None:
            return bool(_TEXT_FILE.search(path.name))
        return path.match(re.sub(r"^(\*\*/)+", "", self.glob))  # any depth: ** adds nothing

    @property
    def wanted(self) -> str:
        return f"files matching {self.glob!r}" if self.glob else ".txt files"


TEXT_FILES = Reading()  # the default: a directory's .txt files, no records


def documents(path: Path, source: str, reading: Reading) -> Iterator[str]:
    """The documents of the corpus file at `path`: its texts joined by blank lines, at most
    DOCUMENT_CHARS characters each (a longer text cut at a paragraph, line or word break)."""
    return pack(texts(path.name, partial(path.open, "rb"), source, reading), DOCUMENT_CHARS)


def check(path: Path, source: str, reading: Reading) -> None:
    """Read the corpus file at `path` up to its first text: a file that cannot be read as
    asked (corrupt, binary, without the text field, not a MediaWiki dump) fails now. Of plain
    text, nothing after its first words can fail: it is read only up to a piece with words."""
    form = file_format(path.name)
    plain = form.kind == "text" and not form.compression
    checking = _CHECKING.set(_SNIFF_BYTES if plain else DOCUMENT_CHARS)
    try:
        with closing(texts(path.name, partial(path.open, "rb"), source, reading)) as found:
            next(found)
    finally:
        _CHECKING.reset(checking)


def texts(name: str, open_raw: Opener, source: str, reading: Reading) -> Iterator[str]:
    """The cleaned texts with words of the corpus file named `name` that `open_raw` opens; a
    file without any, or that cannot be read, is a one-line QuijoteError."""
    form = file_format(name)
    if form.kind in RECORDS and reading.text_field is None:
        raise QuijoteError(f"{source} holds records: name their text field with --text-field")
    found = False
    try:
        with open_raw() as raw, _decompressed(raw, form.compression) as stream:
            for text in _READERS[form.kind](stream, source, reading):
                text = unicodedata.normalize("NFC", _lf(text)).strip()
                if _LETTER.search(text):
                    found = True
                    yield text
    except READ_ERRORS as error:
        raise QuijoteError(f"cannot read {source}: {first_line(error)}") from None
    if not found:
        raise QuijoteError(
            f"{source} has no words: it is empty or holds only punctuation, digits and symbols"
        )


def pack(texts: Iterable[str], limit: int) -> Iterator[str]:
    """`texts` joined by blank lines into documents of at most `limit` characters."""
    document: list[str] = []
    size = -2
    for text in texts:
        for piece in _split([text], limit):
            if document and size + 2 + len(piece) > limit:
                yield "\n\n".join(document)
                document, size = [], -2
            document.append(piece)
            size += 2 + len(piece)
    if document:
        yield "\n\n".join(document)


def _split(chunks: Iterable[str], limit: int) -> Iterator[str]:
    """Continuous text, given in chunks, in pieces of at most `limit` characters, each cut
    after the last paragraph break in it, else line break, else space."""
    buffer = ""
    for chunk in chunks:
        buffer += chunk
        while len(buffer) > limit:
            cut = next(
                (at + len(s) for s in ("\n\n", "\n", " ") if (at := buffer.rfind(s, 0, limit)) > 0),
                limit,
            )
            yield buffer[:cut]
            buffer = buffer[cut:]
    if buffer:
        yield buffer


@contextmanager
def _decompressed(raw: BinaryIO, compression: str) -> Iterator[BinaryIO]:
    if not compression:
        yield raw
        return
    with DECOMPRESSORS[compression](raw) as stream:
        yield stream


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- text -----------------------------------------------------------------------------------

_SNIFF_BYTES = 64 * 1024
_MAX_CONTROL_SHARE = 0.05
# C0 controls other than tab, LF, VT, FF, CR, plus DEL: (almost) never in text.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F])
# cp1252 differs from latin-1 only in 0x80-0x9F; bytes cp1252 leaves undefined stay latin-1.
_CP1252_OVER_LATIN1 = {
    b: bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in range(0x80, 0xA0)
}
_GUTENBERG_START = re.compile(
    r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK\b.*$", re.IGNORECASE | re.MULTILINE
)
_GUTENBERG_END = re.compile(
    r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK\b.*$", re.IGNORECASE | re.MULTILINE
)


def _text(stream: BinaryIO, source: str, reading: Reading) -> Iterator[str]:
    """Text in pieces of at most DOCUMENT_CHARS characters (smaller while check() reads),
    without a Project Gutenberg header (in the first piece) and footer (it ends the text)."""
    pieces = _split(_decoded(stream, source), _CHECKING.get() or DOCUMENT_CHARS)
    for number, piece in enumerate(pieces):
        start = _GUTENBERG_START.search(piece) if number == 0 else None
        end = _GUTENBERG_END.search(piece, start.end() if start else 0)
        yield piece[start.end() if start else 0 : end.start() if end else len(piece)]
        if end:
            return


def _decoded(stream: BinaryIO, source: str) -> Iterator[str]:
    """A byte stream as text with `\\n` line ends: UTF-16 by its byte-order mark, else UTF-8
    (its byte-order mark dropped), from its first invalid byte on Windows-1252. A stream that
    starts with NUL or many control bytes is refused as binary."""
    block = stream.read(_SNIFF_BYTES)
    for bom, encoding in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if block.startswith(bom):
            decode = codecs.getincrementaldecoder(encoding)(errors="replace").decode
            block = block[len(bom) :]
            break
    else:
        controls = len(block) - len(block.translate(None, _CONTROL_BYTES))
        if b"\x00" in block or controls > _MAX_CONTROL_SHARE * len(block):
            raise QuijoteError(f"{source} looks like a binary file, not text")
        offset = len(codecs.BOM_UTF8) if block.startswith(codecs.BOM_UTF8) else 0
        decode = _Utf8OrCp1252(source, offset).decode
        block = block[offset:]
    carried = ""
    while True:
        text = carried + decode(block, not block)
        carried = "\r" if block and text.endswith("\r") else ""  # maybe half of a CRLF
        yield _lf(text[: len(text) - len(carried)])
        if not block:
            return
        block = stream.read(BLOCK_BYTES)


class _Utf8OrCp1252:
    """An incremental decoder: UTF-8 until the first invalid byte, Windows-1252 from there."""

    def __init__(self, source: str, offset: int) -> None:
        self.source, self.offset = source, offset
        self.utf8: codecs.IncrementalDecoder | None = codecs.getincrementaldecoder("utf-8")()

    def decode(self, data: bytes, final: bool) -> str:
        if self.utf8 is None:
            return data.decode("latin-1").translate(_CP1252_OVER_LATIN1)
        pending = self.utf8.getstate()[0]
        try:
            text = self.utf8.decode(data, final)
        except UnicodeDecodeError as error:
            if _CHECKING.get() is None:
                logger.warning(
                    "%s is not valid UTF-8 (first bad byte at offset %d); decoding it from "
                    "there as Windows-1252",
                    self.source,
                    self.offset - len(pending) + error.start,
                )
            self.utf8 = None
            data = pending + data
            return data[: error.start].decode("utf-8") + self.decode(data[error.start :], final)
        self.offset += len(data)
        return text


# --- archives and records -------------------------------------------------------------------


def _zip(stream: BinaryIO, source: str, reading: Reading) -> Iterator[str]:
    """The texts of the archive's selected files, by path."""
    with zipfile.ZipFile(stream) as archive:
        members = sorted(
            (m for m in archive.infolist() if not m.is_dir() and reading.selects(m.filename)),
            key=lambda m: m.filename,
        )
        if not members:
            raise QuijoteError(f"no {reading.wanted} in {source}")
        for member in members:
            opener = partial(archive.open, member)
            yield from texts(member.filename, opener, f"{source}/{member.filename}", reading)


def _json_lines(stream: BinaryIO, source: str, reading: Reading) -> Iterator[str]:
    """The text field of each JSON object, one a line; a null one is skipped."""
    field = reading.text_field
    for number, line in enumerate(_lines(stream, source), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise QuijoteError(f"line {number} of {source} is not JSON") from None
        if not isinstance(record, dict):
            raise QuijoteError(f"line {number} of {source} is not a JSON object")
        if field not in record:
            raise _no_field("field", field, f"line {number} of {source}", list(record))
        value = record[field]
        if not isinstance(value, str | None):
            kind = type(value).__name__
            raise QuijoteError(f"field {field!r} in line {number} of {source} is {kind}, not text")
        if value:
            yield value


def _lines(stream: BinaryIO, source: str) -> Iterator[bytes]:
    while line := stream.readline(MAX_RECORD_BYTES + 1):
        if len(line) > MAX_RECORD_BYTES:
            raise QuijoteError(f"{source} has a line longer than {MAX_RECORD_BYTES:,} bytes")
        yield line


def _csv(stream: BinaryIO, source: str, reading: Reading, delimiter: str) -> Iterator[str]:
    """The named column of a CSV file (UTF-8, a header row; quoted values may hold line
    breaks), parsed by Arrow in blocks; an empty value is skipped, a quoted value still open
    at the end of the file is an error."""
    field = reading.text_field
    header = next(_lines(stream, source), b"").decode("utf-8-sig", errors="replace")
    names = next(csv.reader([header.rstrip("\r\n")], delimiter=delimiter), [])
    if field not in names:
        raise _no_field("column", field, source, names)
    reader = pacsv.open_csv(
        for_arrow(QuoteTracker(stream, source, delimiter, line=2)),
        pacsv.ReadOptions(column_names=names, block_size=1 << 24),
        pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        pacsv.ConvertOptions(include_columns=[field], column_types={field: pa.large_string()}),
    )
    for batch in reader:
        yield from (text for text in batch.column(0).to_pylist() if text)


def _parquet(stream: BinaryIO, source: str, reading: Reading) -> Iterator[str]:
    """The named string column of a Parquet file, a row group at a time."""
    field = reading.text_field
    file = pq.ParquetFile(for_arrow(stream))
    schema = file.schema_arrow
    if field not in schema.names:
        raise _no_field("column", field, source, schema.names)
    kind = schema.field(field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise QuijoteError(f"column {field!r} of {source} holds {kind}, not text")
    for batch in file.iter_batches(batch_size=1024, columns=[field]):
        yield from (text for text in batch.column(0).to_pylist() if text)


def _no_field(what: str, name: str | None, where: str, names: list[str]) -> QuijoteError:
    shown = ", ".join(map(repr, names[:20])) + (" …" if len(names) > 20 else "")
    return QuijoteError(f"no {what} {name!r} in {where}; its {what}s: {shown or 'none'}")


# --- MediaWiki ------------------------------------------------------------------------------


def _wikipedia(stream: BinaryIO, source: str, reading: Reading) -> Iterator[str]:
    """The plain text of each article (namespace 0, not a redirect) of a MediaWiki XML dump,
    parsed as a stream: each page is dropped once read."""
    events = ET.iterparse(stream, events=("start", "end"))
    try:
        _, root = next(events)
    except ET.ParseError as error:
        raise QuijoteError(f"{source} is not a MediaWiki XML dump ({error})") from None
    uri, brace, tag = root.tag.rpartition("}")
    if tag != "mediawiki":
        raise QuijoteError(f"{source} is not a MediaWiki XML dump (its root is <{tag}>)")
    ns = uri + brace  # "{http://www.mediawiki.org/xml/export-0.11/}"
    for event, element in events:
        if event == "end" and element.tag == f"{ns}page":
            if element.findtext(f"{ns}ns") == "0" and element.find(f"{ns}redirect") is None:
                yield plain_wikitext(element.findtext(f"{ns}revision/{ns}text") or "")
            root.clear()


_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_DROPPED_TAGS = re.compile(
    r"<(ref|gallery|math|syntaxhighlight|timeline)\b[^>]*?(?:/>|>.*?</\1\s*>)",
    re.DOTALL | re.IGNORECASE,
)
_TEMPLATE = re.compile(r"\{\{|\}\}")
_TABLE = re.compile(r"\{\||\|\}")
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_HIDDEN_LINKS = {"archivo", "file", "imagen", "image", "categoría", "category"}
_EXTERNAL_LINK = re.compile(r"\[(?:https?:)?//[^\s\]]*\s*([^\]]*)\]")
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$", re.MULTILINE)
_QUOTES = re.compile(r"'{2,}")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_BLANK_LINES = re.compile(r"\n\s*\n\s*")


def plain_wikitext(text: str) -> str:
    """Wikitext as plain text: comments, references, templates, tables, files, images and
    categories dropped; links as their text, headings as paragraphs, no bold or italic quotes,
    no HTML tags."""
    text = _DROPPED_TAGS.sub("", _COMMENT.sub("", text))
    text = _without_nested(_without_nested(text, _TEMPLATE, "{{"), _TABLE, "{|")
    count = 1
    while count:  # innermost links first: a file's caption may hold links
        text, count = _LINK.subn(_link_text, text)
    text = _TAG.sub("", _EXTERNAL_LINK.sub(r"\1", text))
    text = _HEADING.sub(r"\n\2\n", text)
    text = html.unescape(_MAGIC_WORD.sub("", _QUOTES.sub("", text)))
    return _BLANK_LINES.sub("\n\n", text).strip()


def _without_nested(text: str, tokens: re.Pattern[str], opening: str) -> str:
    """`text` without each span from `opening` to its matching closing token (spans nest;
    `tokens` finds both); an unclosed span runs to the end."""
    kept, depth, start = [], 0, 0
    for token in tokens.finditer(text):
        if token.group() == opening:
            if not depth:
                kept.append(text[start : token.start()])
            depth += 1
        elif depth:
            depth -= 1
            if not depth:
                start = token.end()
    if not depth:
        kept.append(text[start:])
    return "".join(kept)


def _link_text(link: re.Match[str]) -> str:
    target, bar, label = link.group(1).partition("|")
    prefix, colon, _ = target.partition(":")
    if colon and prefix.strip().lower() in _HIDDEN_LINKS:
        return ""
    return label if bar and label else target


_READERS: dict[str, Callable[[BinaryIO, str, Reading], Iterator[str]]] = {
    "text": _text,
    "zip": _zip,
    "jsonl": _json_lines,
    "csv": partial(_csv, delimiter=","),
    "tsv": partial(_csv, delimiter="\t"),
    "parquet": _parquet,
    "wikipedia": _wikipedia,
}
