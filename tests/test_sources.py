"""Corpus files by kind: decoding and cleaning text, compression, zip archives, JSON lines, CSV,
Parquet and MediaWiki dumps, each on a small generated file; documents stay bounded."""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import logging
import lzma
import os
import re
import subprocess
import sys
import threading
import tracemalloc
import unicodedata
import zipfile
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from backports import zstd
from hypothesis import given, settings
from hypothesis import strategies as st

from quijote.errors import QuijoteError
from storage import tables
from storage.tables import QuoteTracker, read_columns
from tasks import sources
from tasks.sources import Format, Reading, file_format, plain_wikitext
from tests.data import QUIJOTE

SPANISH = "¿Dónde está el niño? ¡Años de pingüinos en la Mancha!\n"
COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": zstd.compress,
}


def clean(raw: bytes, source: str = "x") -> str:
    """A small text file's cleaned text."""
    return "\n\n".join(sources.texts("x.txt", lambda: io.BytesIO(raw), source, Reading()))


def read(path: Path, text_field: str | None = None, glob: str | None = None) -> list[str]:
    return list(sources.documents(path, path.name, Reading(text_field, glob)))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("libro.txt", Format("text")),
        ("LAZ.TXT.GZ", Format("text", ".gz")),
        ("notas", Format("text")),
        ("cc100-es.txt.xz", Format("text", ".xz")),
        ("es_meta_part_1.jsonl.zst", Format("jsonl", ".zst")),
        ("c4-es.json.gz", Format("jsonl", ".gz")),
        ("news.csv", Format("csv")),
        ("news.tsv.bz2", Format("tsv", ".bz2")),
        ("train.parquet", Format("parquet")),
        ("libros.zip", Format("zip")),
        ("eswiki-latest-pages-articles.xml.bz2", Format("wikipedia", ".bz2")),
        ("enwiki-20231101-pages-articles1.xml-p1p41242.bz2", Format("wikipedia", ".bz2")),
    ],
)
def test_file_format_by_name(name: str, expected: Format) -> None:
    assert file_format(name) == expected


def test_reading_selects_text_files_or_a_glob_at_any_depth() -> None:
    default = Reading()
    assert default.selects("a.txt") and default.selects("x/y/b.TXT.zst")
    assert not default.selects("a.md") and not default.selects(".git/a.txt")
    assert not default.selects("x/.a.txt") and not default.selects("__MACOSX/._a.txt")
    jsonl = Reading(glob="**/*.jsonl.gz")
    assert jsonl.selects("a.jsonl.gz") and jsonl.selects("2024/01/a.jsonl.gz")
    assert not jsonl.selects("a.jsonl")
    with pytest.raises(QuijoteError, match=r"^--text-field is empty"):
        Reading(" ")


# --- text: decoding and cleaning ------------------------------------------------------------


def test_clean_bom_crlf_and_nfc() -> None:
    raw = codecs.BOM_UTF8 + "Espan\u0303a\r\nsen\u0303or\rfin\r\n".encode()
    assert clean(raw) == "España\nseñor\nfin"


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("*** START OF THE PROJECT GUTENBERG EBOOK EL LIBRO ***", "*** END OF THE PROJECT"),
        ("*** START OF THIS PROJECT GUTENBERG EBOOK OTRO ***", "*** END OF THIS PROJECT"),
        ("***start of the project gutenberg ebook, tres ***", "***  end of the project"),
    ],
)
def test_clean_strips_gutenberg_header_and_footer(start: str, end: str) -> None:
    text = f"The Project Gutenberg eBook\r\nTitle: X\r\n{start}\r\n\r\nCapítulo I\r\n"
    text += f"En un lugar\r\n{end} GUTENBERG EBOOK X ***\r\nLicence: Project Gutenberg\r\n"
    assert clean(text.encode()) == "Capítulo I\nEn un lugar"


def test_clean_keeps_text_without_markers() -> None:
    assert clean(b"  Title\n\nSome *** text\n") == "Title\n\nSome *** text"


@pytest.mark.skipif(not QUIJOTE.exists(), reason="shared corpora not present")
def test_clean_real_quijote() -> None:
    [text] = read(QUIJOTE)
    assert text.startswith("El ingenioso hidalgo don Quijote de la Mancha\n")
    assert text.endswith("Vale.\n\nFin")
    assert "Dulcinea" in text and "Rocinante" in text
    assert "Gutenberg" not in text and "\r" not in text and "\ufeff" not in text
    assert unicodedata.is_normalized("NFC", text)


def test_clean_latin1_twin_is_identical(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        latin1 = clean(SPANISH.encode("latin-1"), "latin.txt")
    assert latin1 == clean(SPANISH.encode(), "utf8.txt")
    assert "latin.txt" in caplog.text and "offset 0" in caplog.text


def test_clean_cp1252_twin_is_identical() -> None:
    text = "“Comillas” — y puntos… 5 €\n" + SPANISH
    assert clean(text.encode("cp1252")) == clean(text.encode())
    assert clean(b"a\x81b") == "a\x81b"  # undefined in cp1252: kept as latin-1


def test_clean_utf16_with_bom() -> None:
    assert clean(SPANISH.encode("utf-16")) == SPANISH.strip()


def test_decoding_is_the_same_in_small_blocks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Characters, CRLFs and the switch to Windows-1252 may straddle blocks."""
    text = ("Año\r\nñandú ☃\r\n" * 5).encode() + "señor\r\n".encode("cp1252")
    whole = clean(text)
    assert whole.endswith("ñandú ☃\nseñor") and "\r" not in whole
    monkeypatch.setattr(sources, "_SNIFF_BYTES", 3)
    for block in (1, 2, 3, 5):
        monkeypatch.setattr(sources, "BLOCK_BYTES", block)
        with caplog.at_level(logging.WARNING, logger=sources.__name__):
            assert clean(text) == whole
        assert f"offset {len(text) - 5})" in caplog.text  # the ñ of señor
        caplog.clear()


@pytest.mark.parametrize(
    "raw",
    [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"text" + bytes(range(1, 9)) * 50 + b"more text"],
)
def test_clean_rejects_binary(raw: bytes) -> None:
    with pytest.raises(QuijoteError, match=r"^img\.png looks like a binary file, not text$"):
        clean(raw, "img.png")


@pytest.mark.parametrize(
    "raw", [b"", codecs.BOM_UTF8 + b" \r\n 1605 -- 1615\r\n", "¡¿...!? «—» ;:, 1/2 ½ §\n".encode()]
)
def test_clean_rejects_text_without_words(raw: bytes) -> None:
    with pytest.raises(QuijoteError, match=r"^e\.txt has no words: it is empty or holds only"):
        clean(raw, "e.txt")


# --- documents ------------------------------------------------------------------------------


def test_documents_are_cut_at_paragraphs_then_lines_then_spaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "DOCUMENT_CHARS", 20)
    path = write(tmp_path / "a.txt", b"uno dos\n\ntres cuatro\ncinco seis siete ocho nueve")
    assert read(path) == ["uno dos\n\ntres cuatro", "cinco seis siete", "ocho nueve"]


def test_records_are_packed_into_documents(tmp_path: Path) -> None:
    assert list(sources.pack(["uno", "dos", "tres", "x" * 25, "cuatro"], 12)) == [
        "uno\n\ndos",
        "tres",
        "x" * 12,
        "x" * 12,
        "x\n\ncuatro",
    ]


def test_gutenberg_footer_in_a_later_document_ends_the_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "DOCUMENT_CHARS", 60)
    book = "*** START OF THE PROJECT GUTENBERG EBOOK T ***\n\n" + "En un lugar.\n\n" * 6
    book += "*** END OF THE PROJECT GUTENBERG EBOOK T ***\n\nLicence and more licence.\n"
    documents = read(write(tmp_path / "b.txt", book.encode()))
    assert "\n\n".join(documents) == "\n\n".join(["En un lugar."] * 6)
    assert len(documents) == 2


def test_a_gutenberg_start_line_in_a_later_piece_keeps_the_text_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header is looked for in the first piece only: a later START line is text."""
    monkeypatch.setattr(sources, "DOCUMENT_CHARS", 60)
    start = "*** START OF THE PROJECT GUTENBERG EBOOK"  # a piece: "En un lugar.\n\n" + start
    book = f"Licence.\n\n{start} T\n\n" + "En un lugar.\n\n" * 5 + f"{start}\n\nFin.\n"
    documents = read(write(tmp_path / "b.txt", book.encode()))
    assert "\n\n".join(documents) == "\n\n".join(["En un lugar."] * 5 + [start, "Fin."])
    assert len(documents) > 1


@pytest.mark.parametrize("suffix", [".txt.gz", ".jsonl.gz"])
def test_a_large_compressed_file_is_read_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """16 MiB of text (one line without a break, or 16,000 records) through 1 MiB documents."""
    monkeypatch.setattr(sources, "DOCUMENT_CHARS", 1 << 20)
    if suffix == ".txt.gz":
        data, field = gzip.compress(b"molino " * (1 << 22), 1), None
    else:
        data, field = gzip.compress(b'{"t": "%s"}\n' % (b"gigante " * 128) * 16_000, 1), "t"
    path = write(tmp_path / f"big{suffix}", data)
    tracemalloc.start()
    try:
        documents = sources.documents(path, path.name, Reading(field))
        sizes = [len(document) for document in documents]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(sizes) > 16_000_000 and max(sizes) <= 1 << 20 and len(sizes) >= 16
    assert peak < 12 << 20, peak  # a few documents' worth, not the file


# --- compressed files and zip archives ------------------------------------------------------


@pytest.mark.parametrize("suffix", COMPRESS)
def test_compressed_text_reads_as_the_plain_file(tmp_path: Path, suffix: str) -> None:
    raw = ("Capítulo I\r\n\r\n" + SPANISH * 3).encode("cp1252")
    twice = COMPRESS[suffix](raw[:20]) + COMPRESS[suffix](raw[20:])  # two members or frames
    path = write(tmp_path / f"laz.txt{suffix}", twice)
    assert read(path) == read(write(tmp_path / "laz.txt", raw)) == [clean(raw)]


@pytest.mark.parametrize("suffix", COMPRESS)
def test_a_corrupt_compressed_file_is_one_line(tmp_path: Path, suffix: str) -> None:
    packed = COMPRESS[suffix](SPANISH.encode() * 100)
    for name, data in (("bad", b"plain text, not compressed"), ("cut", packed[: len(packed) // 2])):
        path = write(tmp_path / f"{name}.txt{suffix}", data)
        with pytest.raises(QuijoteError, match=rf"^cannot read {name}\.txt\{suffix}: \S") as error:
            read(path)
        assert "\n" not in str(error.value)


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_zip_of_text_files(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "libros.zip",
        {
            "b.txt": b"Segundo libro.",
            "sub/a.TXT": "Primer libro, en Latin-1: añ".encode("latin-1"),
            "sub/c.txt.gz": gzip.compress(b"Tercer libro."),
            "notas.md": b"no",
            "__MACOSX/._b.txt": b"\x00\x05",
            "dir/": b"",
        },
    )
    assert read(path) == ["Segundo libro.\n\nPrimer libro, en Latin-1: añ\n\nTercer libro."]
    assert read(path, glob="*.md") == ["no"]


def test_bad_zip_archives_are_one_line(tmp_path: Path) -> None:
    empty = make_zip(tmp_path / "empty.zip", {"notas.md": b"hola"})
    with pytest.raises(QuijoteError, match=r"^no \.txt files in empty\.zip$"):
        read(empty)
    binary = make_zip(tmp_path / "bin.zip", {"img.txt": b"\x00PNG" * 10})
    with pytest.raises(QuijoteError, match=r"^bin\.zip/img\.txt looks like a binary file"):
        read(binary)
    with pytest.raises(QuijoteError, match=r"^cannot read fake\.zip: File is not a zip file$"):
        read(write(tmp_path / "fake.zip", b"hola"))


# --- records --------------------------------------------------------------------------------


def test_json_lines_text_field(tmp_path: Path) -> None:
    lines = '{"id": 1, "text": "Uno.\\r\\nDos."}\n\n{"id": 2, "text": null}\n{"text": ""}\n'
    lines += '{"id": 3, "text": "Tres", "meta": {"lang": "es"}}\n'
    assert read(write(tmp_path / "a.jsonl", lines.encode()), "text") == ["Uno.\nDos.\n\nTres"]
    path = write(tmp_path / "oscar.jsonl.zst", COMPRESS[".zst"](lines.encode()))
    assert read(path, "text") == ["Uno.\nDos.\n\nTres"]


@pytest.mark.parametrize(
    ("lines", "field", "message"),
    [
        ('{"text": "a"}\n', None, r"^a\.jsonl holds records: name their text field with --text-"),
        ('{"id": 1, "content": "a"}\n', "text", r"^no field 'text' in line 1 of a\.jsonl; its "),
        ('{"text": "a"}\n{"text": 3}\n', "text", r"^field 'text' in line 2 of a\.jsonl is int, "),
        ('{"text": "a"}\n{"text": "b"\n', "text", r"^line 2 of a\.jsonl is not JSON$"),
        ('["a", "b"]\n', "text", r"^line 1 of a\.jsonl is not a JSON object$"),
        ('{"text": null}\n', "text", r"^a\.jsonl has no words"),
    ],
)
def test_bad_json_lines_are_one_line(
    tmp_path: Path, lines: str, field: str | None, message: str
) -> None:
    with pytest.raises(QuijoteError, match=message):
        read(write(tmp_path / "a.jsonl", lines.encode()), field)


def test_a_json_line_longer_than_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "MAX_RECORD_BYTES", 100)
    path = write(tmp_path / "a.jsonl", b'{"t": "corto"}\n{"t": "%s"}\n' % (b"x" * 200))
    with pytest.raises(QuijoteError, match=r"^a\.jsonl has a line longer than 100 bytes$"):
        read(path, "t")


def test_csv_and_tsv_text_column(tmp_path: Path) -> None:
    table = '\ufeffid,texto,tema\n1,"Uno,\r\ndos.",a\n2,,b\n3,Tres,c\n'
    assert read(write(tmp_path / "a.csv", table.encode()), "texto") == ["Uno,\ndos.\n\nTres"]
    tsv = write(tmp_path / "a.tsv.gz", gzip.compress(b"id\ttexto\n1\tUno\n2\tDos\n"))
    assert read(tsv, "texto") == ["Uno\n\nDos"]
    with pytest.raises(QuijoteError, match=r"^no column 'text' in a\.csv; its columns: 'id', "):
        read(tmp_path / "a.csv", "text")
    broken = write(tmp_path / "b.csv", b"id,texto\n1,uno\n2,dos,tres\n")
    with pytest.raises(QuijoteError, match=r"^cannot read b\.csv: "):
        read(broken, "texto")


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (b'a,b\n1,5 " pulgadas\n2,"x""y"\n', ['5 " pulgadas\n\nx"y']),  # a quote mid-field
        (b'a,b\n1,"dos\nlineas"\n2,"ab"cd"\n', ['dos\nlineas\n\nabcd"']),  # text after one
        (b'a,b\n1,""\n2,"fin"', ["fin"]),  # the last byte closes a quote
        (b'a,b\n1,"fin"""', ['fin"']),
    ],
)
def test_csv_quotes_as_arrow_reads_them(tmp_path: Path, table: bytes, expected: list[str]) -> None:
    assert read(write(tmp_path / "a.csv", table), "b") == expected


@pytest.mark.parametrize(
    ("name", "table", "line"),
    [
        ("a.csv", b'a,b\n1,"hola mundo\n2,adios amigo\n3,otra vez\n', 2),  # the audit's file
        ("a.csv", b'a,b\r\n1,"uno\r\ndos"\r\n2,tres\r\n3,"cuatro ""y""\r\ncinco', 5),
        ("a.csv", b'a,b\n1,"fin""', 2),  # an escaped quote does not close it
        ("a.tsv.gz", gzip.compress(b'a\tb\n1\tuno\n2\t"dos\n', mtime=0), 3),
    ],
)
def test_an_unclosed_quote_is_one_line(tmp_path: Path, name: str, table: bytes, line: int) -> None:
    message = f"^unclosed quote in {re.escape(name)} from line {line}: end the quoted field"
    with pytest.raises(QuijoteError, match=message):
        read(write(tmp_path / name, table), "b")


@settings(max_examples=300, deadline=None)
@given(body=st.lists(st.sampled_from(['"', '""', ",", "\n", "\r\n", "\r", "a", " "])).map("".join))
def test_quotes_are_followed_as_arrow_parses_them_in_any_blocks(body: str) -> None:
    data = body.encode()
    verdicts = set()
    for block in (1, 2, 3, len(data) + 1):
        tracker = QuoteTracker(io.BytesIO(data), "x", ",", line=2)
        try:
            while tracker.read(block):
                pass
            verdicts.add(None)
        except QuijoteError:
            verdicts.add(tracker.quote_line)
    assert len(verdicts) == 1  # the same wherever the blocks end
    # Arrow's own answer: a line after the file is a row of its own unless a quote is open
    rows = pacsv.read_csv(
        io.BytesIO(b"a\n" + data + b"\nEND\n"),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip),
        convert_options=pacsv.ConvertOptions(column_types={"a": pa.string()}),
    )
    assert (verdicts == {None}) == ("END" in rows["a"].to_pylist())


def skip(row: object) -> str:
    return "skip"


def test_parquet_text_column(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    table = pa.table({"id": [1, 2, 3], "texto": ["Uno", None, "Dos"]})
    pq.write_table(table, path, row_group_size=1)
    assert read(path, "texto") == ["Uno\n\nDos"]
    with pytest.raises(QuijoteError, match=r"^column 'id' of a\.parquet holds int64, not text$"):
        read(path, "id")
    with pytest.raises(QuijoteError, match=r"^no column 'text' in a\.parquet; its columns: 'id'"):
        read(path, "text")
    with pytest.raises(QuijoteError, match=r"^cannot read b\.parquet: "):
        read(write(tmp_path / "b.parquet", b"not parquet"), "texto")


def test_arrow_reads_python_files_only_lent(tmp_path: Path, monkeypatch) -> None:
    """Every Python file an Arrow reader gets is lent (tables.for_arrow), so the exit waits
    for Arrow's threads to let go of it: the corpus's CSV and Parquet, a labelled table."""
    handed: list[type] = []

    def spy(real: Callable) -> Callable:
        def reader(file: object, *args: object) -> object:
            handed.append(type(file))
            return real(file, *args)

        return reader

    for module, name in ((pacsv, "read_csv"), (pacsv, "open_csv"), (pq, "ParquetFile")):
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    csv_file = write(tmp_path / "a.csv", b"texto,tema\nuno dos,a\ntres,a\n")
    pq.write_table(pa.table({"texto": ["Uno", "Dos"]}), parquet := tmp_path / "a.parquet")
    sources.check(csv_file, "a.csv", Reading("texto"))
    assert read(csv_file, "texto") == ["uno dos\n\ntres"]
    assert read(parquet, "texto") == ["Uno\n\nDos"]
    assert read_columns(csv_file, ["tema"]) == {"tema": ["a", "a"]}
    assert handed == [tables._Lent] * 4


WAITS_FOR_ARROW = """
import sys, threading, weakref
from storage.tables import for_arrow
held = [for_arrow(open(sys.argv[1], "rb"))]  # as an Arrow thread would hold it
gone = weakref.ref(held[0], lambda _: print("let go"))
threading.Thread(target=lambda: (threading.Event().wait(0.3), held.clear()), daemon=True).start()
"""


def test_the_exit_waits_until_arrow_lets_go_of_a_lent_file(tmp_path: Path) -> None:
    """A Python file let go of while the interpreter exits aborts the process (apache/arrow
    #34314: a read-ahead still in flight when a command fails right after reading)."""
    path = write(tmp_path / "a.csv", b"a\n")
    done = subprocess.run(
        [sys.executable, "-c", WAITS_FOR_ARROW, str(path)], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "let go\n", "")


# --- MediaWiki ------------------------------------------------------------------------------

ARTICLE = """{{Ficha de persona|nombre=Miguel|imagen={{#if:{{{1|}}}|a|b}}}}
'''Miguel de Cervantes''' fue un [[novelista|escritor]] [[España|español]].<ref name="a">Cita \
{{cita|x}}</ref> Nació en [[Alcalá de Henares]]<ref name="b" />.<!-- un comentario -->

== Obras ==
[[Archivo:Cervantes.jpg|miniatura|Retrato de [[Cervantes]]]]
Escribió ''El Quijote'' y <small>más</small>.<br />
{| class="wikitable"
|-
| celda || {{bandera|ESP}}
|}
Véase [https://example.org la página] y [https://example.org].
__NOTOC__
[[Categoría:Escritores]]
[[File:Firma.svg]]"""
PLAIN = """Miguel de Cervantes fue un escritor español. Nació en Alcalá de Henares.

Obras

Escribió El Quijote y más.

Véase la página y ."""


def mediawiki(pages: list[tuple[str, int, str, bool]]) -> bytes:
    """A pages-articles dump of (title, namespace, wikitext, is a redirect) pages."""
    xml = [
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11">',
        "<siteinfo><sitename>Wikipedia</sitename></siteinfo>",
    ]
    for title, namespace, text, redirect in pages:
        xml += [
            f"<page><title>{escape(title)}</title><ns>{namespace}</ns><id>1</id>",
            f'<redirect title="{escape(text)}" />' if redirect else "",
            f'<revision><id>2</id><text xml:space="preserve">{escape(text)}</text></revision>',
            "</page>",
        ]
    return "\n".join([*xml, "</mediawiki>"]).encode()


def test_plain_wikitext() -> None:
    assert plain_wikitext(ARTICLE) == PLAIN
    assert plain_wikitext("a {{sin cerrar|b\n\nc") == "a"
    assert plain_wikitext("[[a]]s [[b|]] [[:Categoría:C|c]] x}} y") == "as b c x}} y"


def test_wikipedia_dump_keeps_articles_only(tmp_path: Path) -> None:
    dump = mediawiki(
        [
            ("Miguel de Cervantes", 0, ARTICLE, False),
            ("Cervantes", 0, "#REDIRECCIÓN [[Miguel de Cervantes]]", True),
            ("Discusión:Miguel de Cervantes", 1, "Una charla sobre el artículo.", False),
            ("Molino", 0, "Un '''molino''' de viento.", False),
            ("Vacío", 0, "{{Desambiguación}}", False),
        ]
    )
    path = write(tmp_path / "eswiki-latest-pages-articles.xml.bz2", bz2.compress(dump))
    assert read(path) == [f"{PLAIN}\n\nUn molino de viento."]


def test_xml_that_is_not_a_mediawiki_dump_is_one_line(tmp_path: Path) -> None:
    rss = write(tmp_path / "feed.xml", b"<rss><channel><title>x</title></channel></rss>")
    with pytest.raises(QuijoteError, match=r"^feed\.xml is not a MediaWiki XML dump \(its root"):
        read(rss)
    text = write(tmp_path / "notas-pages-articles.xml", b"hola, no soy XML")
    with pytest.raises(QuijoteError, match=r"^notas-pages-articles\.xml is not a MediaWiki XML"):
        read(text)
    cut = write(tmp_path / "cut.xml", mediawiki([("A", 0, "Texto.", False)])[:-40])
    with pytest.raises(QuijoteError, match=r"^cannot read cut\.xml: "):
        read(cut)


def test_the_check_reads_plain_text_only_up_to_its_first_words(tmp_path: Path) -> None:
    """A pipe that is never closed: reading all of it would never end."""
    fifo = tmp_path / "corpus.txt"
    os.mkfifo(fifo)
    written: list[int] = []

    def write_until_closed() -> None:
        with fifo.open("wb") as pipe:
            try:
                while len(written) < 1000:  # 64 MB: more than the check may read
                    pipe.write(b"En un lugar de la Mancha. " * 2520)
                    written.append(1)
            except BrokenPipeError:
                pass

    writer = threading.Thread(target=write_until_closed)
    writer.start()
    sources.check(fifo, "corpus.txt", Reading())
    writer.join(30)
    assert not writer.is_alive() and len(written) < 100  # stopped by the check's close


def test_the_check_is_quiet_and_the_real_read_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "a.txt", "Año nuevo, vida nueva.\n".encode("cp1252"))
    sources.check(path, "a.txt", Reading())
    assert "not valid UTF-8" not in caplog.text
    assert read(path) == ["Año nuevo, vida nueva."]
    assert caplog.text.count("a.txt is not valid UTF-8") == 1
