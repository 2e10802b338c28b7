"""Download stage: spec resolution, mirror, downloads (against a loopback server) and the
documents it writes (how each kind of file is read: tests/test_sources.py)."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from quijote.errors import QuijoteError
from storage.schemas import DOCUMENTS
from tasks import download as dl
from tasks.sources import Reading
from tests.data import CORPORA, QUIJOTE

SPANISH = "¿Dónde está el niño? ¡Años de pingüinos en la Mancha!\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "BACKOFF_S", 0.0)


# --- a loopback HTTP server -----------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes = b""
    delay: float = 0.0
    location: str | None = None  # where a redirect points
    again_every: float | None = None  # send the body again and again, this many seconds apart


@dataclass
class Route:
    replies: list[Reply]  # served in turn; the last one repeats
    content_length: bool = True
    hits: int = 0


@dataclass
class Server:
    base: str
    routes: dict[str, Route] = field(default_factory=dict)

    def serve(self, path: str, *replies: Reply, content_length: bool = True) -> str:
        self.routes[path] = Route(list(replies), content_length)
        return self.base + path


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = state.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            route.hits += 1
            reply = route.replies[min(route.hits, len(route.replies)) - 1]
            time.sleep(reply.delay)
            try:
                self.send_response(reply.status)
                if route.content_length:
                    self.send_header("Content-Length", str(len(reply.body)))
                if reply.location:
                    self.send_header("Location", reply.location)
                self.end_headers()
                self.wfile.write(reply.body)
                stop = time.monotonic() + 20  # "forever", for a test that would otherwise hang
                while reply.again_every is not None and time.monotonic() < stop:
                    time.sleep(reply.again_every)
                    self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                pass

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- fetch: local specs ---------------------------------------------------------------------


def test_fetch_local_file(tmp_path: Path) -> None:
    path = tmp_path / "libro.txt"
    path.write_bytes(b"hola")
    assert dl.fetch(str(path), None, tmp_path / "raw") == [
        dl.RawFile(str(path), path, sha(b"hola"))
    ]


def test_fetch_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nada.txt"
    with pytest.raises(
        QuijoteError, match=f"^no such file or directory: {re.escape(str(missing))}$"
    ):
        dl.fetch(str(missing), None, tmp_path)


@pytest.mark.parametrize("spec", ["quijot", "ftp://example.org/a.txt", "", "  "])
def test_fetch_unrecognised(spec: str, tmp_path: Path) -> None:
    with pytest.raises(QuijoteError, match="registered name \\(quijote\\), an http\\(s\\) URL"):
        dl.fetch(spec, None, tmp_path)


def tree(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    return root


def test_fetch_directory_at_any_depth(tmp_path: Path) -> None:
    names = ["b.txt", "a.txt", "c.md", ".hidden.txt", "sub/d.txt.gz", "sub/deep/e.TXT"]
    books = tree(tmp_path / "books", [*names, ".git/f.txt", "sub/g.jsonl"])
    raws = dl.fetch(str(books), None, tmp_path / "raw")
    relative = [r.path.relative_to(books).as_posix() for r in raws]
    assert relative == ["a.txt", "b.txt", "sub/d.txt.gz", "sub/deep/e.TXT"]
    assert raws[0] == dl.RawFile(str(books / "a.txt"), books / "a.txt", sha(b"a.txt"))
    jsonl = dl.fetch(str(books), None, tmp_path / "raw", Reading(glob="*.jsonl"))
    assert [r.path for r in jsonl] == [books / "sub" / "g.jsonl"]


def test_fetch_directory_without_matching_files(tmp_path: Path) -> None:
    tree(tmp_path, ["notes.md", "sub/more.md"])
    with pytest.raises(QuijoteError, match=r"^no \.txt files in directory .* \(or its subfolders"):
        dl.fetch(str(tmp_path), None, tmp_path / "raw")
    with pytest.raises(QuijoteError, match=r"^no files matching '\*\.csv' in directory "):
        dl.fetch(str(tmp_path), None, tmp_path / "raw", Reading(glob="*.csv"))


# --- fetch: registered names and the mirror -------------------------------------------------

BOOK = b"*** START OF THE PROJECT GUTENBERG EBOOK T ***\nEn un lugar de la Mancha\n"


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, server: Server) -> dl.Registered:
    """A registered corpus `tiny` whose URL points at the loopback server."""
    url = server.serve("/tiny.txt", Reply(200, BOOK))
    entry = dl.Registered(url, sha(BOOK), len(BOOK), ("tiny.txt", "pg1.txt"))
    monkeypatch.setitem(dl.REGISTERED, "tiny", entry)
    return entry


def test_registered_found_in_mirror_by_name(tmp_path: Path, tiny: dl.Registered) -> None:
    (tmp_path / "pg1.txt").write_bytes(BOOK)
    raw = dl.fetch("tiny", tmp_path, tmp_path / "raw")
    assert raw == [dl.RawFile("tiny", tmp_path / "pg1.txt", tiny.sha256)]


def test_registered_found_in_mirror_by_checksum(tmp_path: Path, tiny: dl.Registered) -> None:
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "renamed.dat").write_bytes(BOOK)
    (tmp_path / "same_size.txt").write_bytes(b"x" * len(BOOK))
    [raw] = dl.fetch("tiny", tmp_path, tmp_path / "raw")
    assert raw.path == tmp_path / "deep" / "er" / "renamed.dat"


def test_registered_wrong_mirror_file_ignored_then_downloaded_once(
    tmp_path: Path, server: Server, tiny: dl.Registered
) -> None:
    mirror, raw_dir = tmp_path / "mirror", tmp_path / "raw"
    mirror.mkdir()
    (mirror / "tiny.txt").write_bytes(BOOK.replace(b"Mancha", b"Manche"))
    [raw] = dl.fetch("tiny", mirror, raw_dir)
    assert raw == dl.RawFile("tiny", raw_dir / f"{tiny.sha256}.txt", tiny.sha256)
    assert raw.path.read_bytes() == BOOK
    assert dl.fetch("tiny", mirror, raw_dir) == [raw]  # the earlier download is reused
    assert server.routes["/tiny.txt"].hits == 1
    assert files_in(raw_dir) == [f"{tiny.sha256}.txt"]


def test_registered_download_checksum_mismatch(
    tmp_path: Path, server: Server, tiny: dl.Registered
) -> None:
    server.serve("/tiny.txt", Reply(200, b"something else"))
    with pytest.raises(QuijoteError) as error:
        dl.fetch("tiny", None, tmp_path)
    assert tiny.sha256 in str(error.value) and sha(b"something else") in str(error.value)
    assert files_in(tmp_path) == []


@pytest.mark.skipif(not QUIJOTE.exists(), reason="shared corpora not present")
def test_registered_quijote_in_shared_mirror(tmp_path: Path) -> None:
    assert dl.fetch("quijote", CORPORA, tmp_path) == [
        dl.RawFile("quijote", QUIJOTE, dl.REGISTERED["quijote"].sha256)
    ]


# --- fetch: URLs ----------------------------------------------------------------------------


def test_url_download(tmp_path: Path, server: Server) -> None:
    url = server.serve("/libros/a%20b.txt", Reply(200, BOOK))
    [raw] = dl.fetch(url, tmp_path / "mirror", tmp_path)
    assert raw == dl.RawFile(url, tmp_path / f"{sha(BOOK)}.txt", sha(BOOK))
    assert raw.path.read_bytes() == BOOK
    assert files_in(tmp_path) == [raw.path.name]


def test_url_found_in_mirror_by_basename(tmp_path: Path, server: Server) -> None:
    url = server.serve("/libros/a%20b.txt", Reply(200, BOOK))
    (tmp_path / "a b.txt").write_bytes(b"local copy")
    assert dl.fetch(url, tmp_path, tmp_path / "raw") == [
        dl.RawFile(url, tmp_path / "a b.txt", sha(b"local copy"))
    ]
    assert server.routes["/libros/a%20b.txt"].hits == 0


def test_url_retries_transient_errors(tmp_path: Path, server: Server) -> None:
    url = server.serve("/flaky.txt", Reply(503), Reply(503), Reply(200, BOOK))
    [raw] = dl.fetch(url, None, tmp_path)
    assert raw.sha256 == sha(BOOK) and server.routes["/flaky.txt"].hits == 3


def test_url_retries_timeouts(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dl, "TIMEOUT_S", 0.2)
    url = server.serve("/slow.txt", Reply(200, BOOK, delay=0.5), Reply(200, BOOK))
    assert dl.fetch(url, None, tmp_path)[0].sha256 == sha(BOOK)


def test_url_retries_too_many_requests(tmp_path: Path, server: Server) -> None:
    """HTTP 429 is transient, unlike the other 4xx: retried, then given up after three."""
    url = server.serve("/busy.txt", Reply(429), Reply(429), Reply(200, BOOK))
    [raw] = dl.fetch(url, None, tmp_path)
    assert raw.sha256 == sha(BOOK) and server.routes["/busy.txt"].hits == 3
    url = server.serve("/always-busy.txt", Reply(429))
    with pytest.raises(QuijoteError, match=r"\(HTTP 429 "):
        dl.fetch(url, None, tmp_path)
    assert server.routes["/always-busy.txt"].hits == 3


def test_url_gives_up_after_three_server_errors(tmp_path: Path, server: Server) -> None:
    url = server.serve("/down.txt", Reply(500))
    with pytest.raises(QuijoteError, match="HTTP 500"):
        dl.fetch(url, None, tmp_path)
    assert server.routes["/down.txt"].hits == 3


def test_url_404_fails_at_once(tmp_path: Path, server: Server) -> None:
    url = server.serve("/gone.txt", Reply(404))
    with pytest.raises(
        QuijoteError, match=r"^could not download .*/gone.txt \(HTTP 404 .*gone\.txt"
    ):
        dl.fetch(url, None, tmp_path)
    assert server.routes["/gone.txt"].hits == 1
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("mirror", [None, Path("/some/mirror")])
def test_url_unreachable(tmp_path: Path, mirror: Path | None) -> None:
    url = f"http://127.0.0.1:{closed_port()}/pg2000.txt"
    with pytest.raises(QuijoteError) as error:
        dl.fetch(url, mirror, tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"could not download {url} (")
    assert "put pg2000.txt in" in message and "QUIJOTE_MIRROR" in message
    assert (str(mirror) if mirror else "no mirror is set") in message


@pytest.mark.parametrize("content_length", [True, False])
def test_url_size_bound(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch, content_length: bool
) -> None:
    monkeypatch.setattr(dl, "MAX_BYTES", 10)
    url = server.serve("/big.txt", Reply(200, b"x" * 100), content_length=content_length)
    with pytest.raises(QuijoteError, match="larger than the download limit of 10 bytes"):
        dl.fetch(url, None, tmp_path)
    assert server.routes["/big.txt"].hits == 1
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("content_length", [True, False])
def test_url_of_exactly_the_size_limit_is_downloaded(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch, content_length: bool
) -> None:
    monkeypatch.setattr(dl, "MAX_BYTES", len(BOOK))
    url = server.serve("/exact.txt", Reply(200, BOOK), content_length=content_length)
    [raw] = dl.fetch(url, None, tmp_path)
    assert raw.path.read_bytes() == BOOK and files_in(tmp_path) == [raw.path.name]
    monkeypatch.setattr(dl, "MAX_BYTES", len(BOOK) - 1)
    with pytest.raises(QuijoteError, match="larger than the download limit"):
        dl.fetch(url, None, tmp_path / "other")


def test_url_redirecting_forever_fails_in_one_line(tmp_path: Path, server: Server) -> None:
    loop = server.serve("/loop.txt", Reply(302, location="/loop.txt"))
    for hop in range(30):
        server.serve(f"/hop/{hop}.txt", Reply(301, location=f"/hop/{hop + 1}.txt"))
    for url in (loop, server.base + "/hop/0.txt"):
        with pytest.raises(QuijoteError, match=r"\(HTTP 30[12] .*redirect.*\); to work offline"):
            dl.fetch(url, None, tmp_path)
    assert sum(route.hits for route in server.routes.values()) <= 5 + 11  # urllib's limits
    assert files_in(tmp_path) == []


def test_an_endless_body_is_cut_by_size_and_a_slow_one_by_time(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dl, "MAX_BYTES", 1 << 20)
    monkeypatch.setattr(dl, "MAX_SECONDS", 1.0)
    flood = server.serve(
        "/flood.txt", Reply(200, b"molino " * 8192, again_every=0), content_length=False
    )
    drip = server.serve(
        "/drip.txt", Reply(200, b"gigante ", again_every=0.05), content_length=False
    )
    started = time.monotonic()
    with pytest.raises(QuijoteError, match="larger than the download limit of 1,048,576 bytes"):
        dl.fetch(flood, None, tmp_path)
    with pytest.raises(QuijoteError, match=r"drip\.txt was still downloading after 1 s \("):
        dl.fetch(drip, None, tmp_path)
    assert time.monotonic() - started < 5
    assert server.routes["/drip.txt"].hits == 1 and files_in(tmp_path) == []


def test_url_download_keeps_the_format_in_its_name(tmp_path: Path, server: Server) -> None:
    dump = gzip.compress(b'{"text": "En un lugar de la Mancha"}\n')
    url = server.serve("/oscar/es_part_1.jsonl.gz?download=1", Reply(200, dump))
    [raw] = dl.fetch(url, None, tmp_path)
    assert raw.path == tmp_path / f"{sha(dump)}.jsonl.gz"


def test_a_url_name_cannot_reach_outside_the_mirror(tmp_path: Path, server: Server) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (tmp_path / "secret.txt").write_bytes(b"not a corpus")
    url = server.serve("/..%2Fsecret.txt", Reply(200, BOOK))  # the name decodes to ../secret.txt
    [raw] = dl.fetch(url, mirror, tmp_path / "raw")
    assert raw.sha256 == sha(BOOK) and server.routes["/..%2Fsecret.txt"].hits == 1


# --- the task -------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QUIJOTE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUIJOTE_MIRROR", str(tmp_path / "mirror"))
    return tmp_path


def test_download_task_writes_documents_and_is_cached(home: Path) -> None:
    books = home / "books"
    books.mkdir()
    (books / "a.txt").write_bytes(SPANISH.encode("latin-1"))
    (books / "b.txt").write_bytes(BOOK)
    first = dl.download([str(books), str(books / "a.txt")])  # a.txt twice: kept once
    assert not first.reused
    assert first.meta["documents"] == 2
    assert first.meta["sources"] == [str(books / "a.txt"), str(books / "b.txt")]
    table = pq.read_table(first.file("documents.parquet"))
    assert table.schema == DOCUMENTS
    assert table.column("text").to_pylist() == [SPANISH.strip(), "En un lugar de la Mancha"]
    assert first.meta["characters"] == sum(len(t) for t in table.column("text").to_pylist())
    assert pq.ParquetFile(first.file("documents.parquet")).num_row_groups == 2

    second = dl.download([str(books)])
    assert second.reused and second.key == first.key and second.path == first.path


def test_download_task_needs_a_corpus(home: Path) -> None:
    with pytest.raises(QuijoteError, match="no corpus"):
        dl.download([])


def text_sha(text: str) -> str:
    return sha(text.encode())


def test_download_task_reads_every_kind_and_keys_documents_by_their_text(home: Path) -> None:
    books = home / "books"
    (books / "sub").mkdir(parents=True)
    (books / "libro.txt.gz").write_bytes(gzip.compress(BOOK))
    records = [{"id": 1, "texto": "Uno."}, {"id": 2, "texto": "Dos."}]
    (books / "sub" / "news.jsonl").write_text("\n".join(map(json.dumps, records)))
    plain = home / "libro.txt"
    plain.write_bytes(BOOK)
    first = dl.download([str(books), str(plain)], text_field="texto", glob="*")
    table = pq.read_table(first.file("documents.parquet")).to_pydict()
    texts = ["En un lugar de la Mancha", "Uno.\n\nDos.", "En un lugar de la Mancha"]
    assert table["text"] == texts
    assert table["source"] == [
        str(books / "libro.txt.gz"),
        str(books / "sub/news.jsonl"),
        str(plain),
    ]
    assert table["sha256"] == first.meta["document_sha256"] == [text_sha(t) for t in texts]
    assert first.meta["params"] == {"text_field": "texto", "glob": "*"}

    again = dl.download([str(books), str(plain)], text_field="texto", glob="*")
    assert again.reused and again.key == first.key
    plain_only, with_field = dl.download([str(plain)]), dl.download([str(plain)], "texto")
    assert plain_only.key != with_field.key  # the options are part of the key...
    assert plain_only.meta["document_sha256"] == with_field.meta["document_sha256"]  # ...not of
    assert plain_only.meta["inputs"] == with_field.meta["inputs"]  # the documents or the files.


def test_download_task_checks_every_local_file_before_any_work(home: Path) -> None:
    books = home / "books"
    books.mkdir()
    (books / "a.jsonl").write_text('{"texto": "Uno."}\n')
    (books / "b.jsonl").write_text('{"text": "Dos."}\n')
    with pytest.raises(QuijoteError, match=r"^no field 'texto' in line 1 of .*b\.jsonl; its "):
        dl.download([str(books)], text_field="texto", glob="*.jsonl")
    with pytest.raises(QuijoteError, match=r"a\.jsonl holds records: name their text field"):
        dl.download([str(books)], glob="*.jsonl")
    assert not (home / "home").exists()
