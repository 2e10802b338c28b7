"""Download stage: a corpus spec (registered name, URL, file or directory) -> cleaned documents.

`fetch` resolves a spec to raw files on disk (mirror first, then the network, downloads kept
in `data/raw/` by content hash); `tasks.sources` reads each file by its kind into documents;
the `download` task writes one `documents.parquet` row per document.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlparse
from urllib.request import Request, urlopen

import pyarrow as pa

from quijote.errors import QuijoteError
from storage import paths
from storage.files import file_sha256, space_for, write_parquet
from storage.schemas import DOCUMENTS
from storage.stages import StageOutput, run_stage
from tasks import sources
from tasks.sources import TEXT_FILES, Reading, file_format
from tasks.stage_task import stage_task

logger = logging.getLogger(__name__)

VERSION = 3
TIMEOUT_S = 30.0  # per network operation (connect, each read)
MAX_SECONDS = 3600.0  # a download attempt still receiving after this long is refused
MAX_BYTES = 1 << 30  # a download larger than this is refused (urllib follows 10 redirects)
ATTEMPTS = 3
BACKOFF_S = 1.0  # wait before retry n (n = 1, 2, ...) is BACKOFF_S * 2 ** (n - 1)
USER_AGENT = "quijote-embeddings/0.1 (+urllib)"


@dataclass(frozen=True)
class RawFile:
    """One corpus file on disk."""

    source: str  # what the user gave / where it came from (URL, path, name)
    path: Path  # the bytes on disk
    sha256: str


@dataclass(frozen=True)
class Registered:
    """A corpus known by name: where to download it and how to recognise it in a mirror."""

    url: str
    sha256: str
    size: int  # bytes; only mirror files of this size are hashed
    filenames: tuple[str, ...]  # names to look for directly in the mirror directory


REGISTERED: dict[str, Registered] = {
    "quijote": Registered(
        url="https://www.gutenberg.org/cache/epub/2000/pg2000.txt",
        sha256="485be638d952a55acbb944c964d0429418ca2da711df7bc48a36c612129ead9b",
        size=2225769,
        filenames=("quijote_pg2000.txt", "pg2000.txt"),
    ),
}


# --- fetch ----------------------------------------------------------------------------------


def fetch(
    spec: str, mirror: Path | None, raw_dir: Path, reading: Reading = TEXT_FILES
) -> list[RawFile]:
    """Resolve a corpus spec to raw files: a registered name, an http(s) URL, a local file or
    a directory (the files `reading` selects in it, at any depth, sorted by path)."""
    kind = corpus_kind(spec)
    if kind == "name":
        return [_fetch_registered(spec, REGISTERED[spec], mirror, raw_dir)]
    if kind == "url":
        return [_fetch_url(spec, mirror, raw_dir)]
    path = Path(spec).expanduser()
    files = [path] if kind == "file" else _directory_files(path, reading)
    return [RawFile(str(p), p, file_sha256(p)) for p in files]


def check_corpus(spec: str, reading: Reading) -> None:
    """Fail now, in one line, on a spec that names nothing usable or a local corpus that
    cannot be read as asked (each file is read up to its first text)."""
    kind = corpus_kind(spec)
    path = Path(spec).expanduser()
    if kind in ("file", "directory"):
        for file in [path] if kind == "file" else _directory_files(path, reading):
            sources.check(file, str(file), reading)


def corpus_kind(spec: str) -> str:
    """What a corpus spec names, "name", "url", "file" or "directory", looking at nothing but
    the spec and the local file system; a one-line error when it names nothing usable."""
    if spec in REGISTERED:
        return "name"
    url = urlparse(spec)
    if url.scheme in ("http", "https") and url.netloc:
        return "url"
    path = Path(spec).expanduser()
    if spec.strip():  # Path("") is the current directory
        if path.is_file():
            return "file"
        if path.is_dir():
            return "directory"
        if not path.exists() and not url.scheme and _looks_like_path(spec):
            raise QuijoteError(f"no such file or directory: {spec}")
    raise QuijoteError(
        f"unrecognised corpus {spec!r}: expected a registered name "
        f"({', '.join(sorted(REGISTERED))}), an http(s) URL, a corpus file or a directory"
    )


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.startswith((".", "~")) or bool(Path(spec).suffix)


def _directory_files(directory: Path, reading: Reading) -> list[Path]:
    """The files in `directory` and its subfolders that `reading` selects, by path."""
    files = sorted(
        p
        for p in directory.rglob("*")
        if reading.selects(p.relative_to(directory).as_posix()) and p.is_file()
    )
    if not files:
        raise QuijoteError(f"no {reading.wanted} in directory {directory} (or its subfolders)")
    return files


def _fetch_registered(name: str, entry: Registered, mirror: Path | None, raw_dir: Path) -> RawFile:
    """Mirror by file name, mirror by checksum, an earlier download, then the network."""
    found = _find_in_mirror(entry, mirror)
    if found is None:
        cached = raw_dir / _raw_name(entry.sha256, entry.filenames[0])
        if cached.is_file() and file_sha256(cached) == entry.sha256:
            found = cached
    if found is None:
        found, _ = _download(entry.url, raw_dir, entry.filenames[0], mirror, entry.sha256)
    return RawFile(name, found, entry.sha256)


def _find_in_mirror(entry: Registered, mirror: Path | None) -> Path | None:
    if mirror is None or not mirror.is_dir():
        return None
    for filename in entry.filenames:
        candidate = mirror / filename
        if candidate.is_file():
            if file_sha256(candidate) == entry.sha256:
                return candidate
            logger.warning("ignoring %s: its sha256 is not %s", candidate, entry.sha256)
    for candidate in sorted(mirror.rglob("*")):
        if (
            candidate.is_file()
            and candidate.stat().st_size == entry.size
            and file_sha256(candidate) == entry.sha256
        ):
            return candidate
    return None


def _fetch_url(url: str, mirror: Path | None, raw_dir: Path) -> RawFile:
    filename = PurePosixPath(unquote(urlparse(url).path)).name  # %2F cannot leave the mirror
    if mirror is not None and filename and (mirror / filename).is_file():
        path = mirror / filename
        logger.info("using the mirror copy %s of %s", path, url)
        return RawFile(url, path, file_sha256(path))
    path, sha256 = _download(url, raw_dir, filename or "the file", mirror)
    return RawFile(url, path, sha256)


# --- download -------------------------------------------------------------------------------


def _raw_name(sha256: str, filename: str) -> str:
    """A downloaded file's name: its content hash and the ending that tells its format."""
    return sha256 + file_format(filename).suffix


def _download(
    url: str, raw_dir: Path, filename: str, mirror: Path | None, expected: str | None = None
) -> tuple[Path, str]:
    """Download `url` into `raw_dir/<sha256>.<format>`, retrying transient failures."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    reason = ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _download_once(url, raw_dir, filename, expected)
        except HTTPError as e:
            e.close()
            reason = f"HTTP {e.code} " + " ".join(str(e.reason).split())  # redirect loops: 3 lines
            if e.code < 500 and e.code != 429:
                break
        except (URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
            reason = " ".join(str(getattr(e, "reason", e)).split()) or type(e).__name__
        if attempt < ATTEMPTS:
            logger.warning("download of %s failed (%s); retry %d", url, reason, attempt)
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
    if mirror is None:
        offline = f"put {filename} in a directory and set QUIJOTE_MIRROR to it (no mirror is set)"
    else:
        offline = (
            f"put {filename} in the mirror directory {mirror} "
            "(or set QUIJOTE_MIRROR to another directory holding it)"
        )
    raise QuijoteError(f"could not download {url} ({reason}); to work offline {offline}")


def _download_once(
    url: str, raw_dir: Path, filename: str, expected: str | None
) -> tuple[Path, str]:
    """One attempt: stream to a temporary file in `raw_dir`, check size, time and checksum,
    then rename it to its content hash (the final name is only known once every byte is read)."""
    request = Request(url, headers={"User-Agent": USER_AGENT})
    deadline = time.monotonic() + MAX_SECONDS
    with (
        urlopen(request, timeout=TIMEOUT_S) as response,
        tempfile.TemporaryDirectory(prefix=".download-", dir=raw_dir) as work,
    ):
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BYTES:
            raise _too_large(url)
        part = Path(work) / "part"
        digest = hashlib.sha256()
        size = 0
        with space_for(raw_dir), part.open("wb") as out:
            while block := response.read1(1 << 20):  # what has arrived, up to 1 MiB
                size += len(block)
                if size > MAX_BYTES:
                    raise _too_large(url)
                if time.monotonic() > deadline:
                    raise QuijoteError(
                        f"{url} was still downloading after {MAX_SECONDS:g} s ({size:,} bytes): "
                        "put the file in the mirror directory instead"
                    )
                digest.update(block)
                out.write(block)
        sha256 = digest.hexdigest()
        if expected is not None and sha256 != expected:
            raise QuijoteError(
                f"{url} has sha256 {sha256}, expected {expected}: the file changed upstream "
                "or the download is corrupt; put the expected file in the mirror directory"
            )
        final = raw_dir / _raw_name(sha256, filename)
        part.replace(final)
        return final, sha256


def _too_large(url: str) -> QuijoteError:
    return QuijoteError(f"{url} is larger than the download limit of {MAX_BYTES:,} bytes")


# --- task -----------------------------------------------------------------------------------


@stage_task("download")
def download(
    corpus: list[str], text_field: str | None = None, glob: str | None = None
) -> StageOutput:
    """Fetch every corpus spec and write their documents to `documents.parquet`, each with the
    sha256 of its text: the key of the per-document stages."""
    if not corpus:
        raise QuijoteError("no corpus given: name at least one (for example --corpus quijote)")
    reading = Reading(text_field, glob)
    for spec in corpus:
        check_corpus(spec, reading)
    mirror, raw_dir = paths.mirror_dir(), paths.raw_dir()
    raws: list[RawFile] = []
    seen: set[str] = set()
    for spec in corpus:
        for raw in fetch(spec, mirror, raw_dir, reading):
            if raw.sha256 in seen:
                logger.warning("skipping %s: same content as an earlier corpus file", raw.source)
            else:
                seen.add(raw.sha256)
                raws.append(raw)

    def build(out_dir: Path) -> dict[str, Any]:
        hashes: list[str] = []
        characters = 0

        def batches() -> Iterator[pa.RecordBatch]:
            nonlocal characters
            for raw in raws:
                for text in sources.documents(raw.path, raw.source, reading):
                    hashes.append(hashlib.sha256(text.encode()).hexdigest())
                    characters += len(text)
                    yield pa.RecordBatch.from_pydict(
                        {"source": [raw.source], "sha256": [hashes[-1]], "text": [text]},
                        schema=DOCUMENTS,
                    )

        documents = write_parquet(out_dir / "documents.parquet", DOCUMENTS, batches())
        return {
            "documents": documents,
            "characters": characters,
            "sources": [r.source for r in raws],
            "document_sha256": hashes,  # what each per-document stage reads
        }

    params = {"text_field": text_field, "glob": glob}
    return run_stage("download", VERSION, params, [r.sha256 for r in raws], build)
