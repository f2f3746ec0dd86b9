"""Real-text corpora for four domains, gathered offline with a licence recorded per document.

Sources are the running CPython's standard library and Debian packages, used where
installed and otherwise fetched with ``apt-get download`` and unpacked into the cache.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import platform
import re
import subprocess
import sysconfig
import textwrap
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lethe.data.documents import Document

_log = logging.getLogger("lethe")

DOMAINS: tuple[str, ...] = ("code", "science", "books", "general")
DEBIAN_PACKAGES: dict[str, tuple[str, ...]] = {
    "code": (),
    "science": ("texlive-science-doc",),
    "books": ("bible-kjv", "bible-kjv-text", "r-cran-janeaustenr"),
    "general": ("python3.11-doc", "jargon-text", "fortunes-min", "fortunes"),
}
# Source group (second component of a document id) -> the packages it is read from.
_GROUP_PACKAGES: dict[str, tuple[str, ...]] = {
    "cpython": (),
    "texlive": ("texlive-science-doc",),
    "kjv": ("bible-kjv", "bible-kjv-text"),
    "austen": ("r-cran-janeaustenr",),
    "python-docs": ("python3.11-doc",),
    "jargon": ("jargon-text",),
    "fortunes-min": ("fortunes-min",),
    "fortunes": ("fortunes",),
}

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # keeps \t and \n
_FORTUNE_LICENCE = "BSD-3-Clause (fortune-mod); texts of various origin, see usr/share/doc/fortunes/copyright"


@dataclass(frozen=True)
class _Package:
    name: str
    root: Path
    version: str

    def files(self, subdir: str) -> list[Path]:
        """Regular files of this package under ``subdir``, sorted.

        An installed package shares ``/`` with every other package (fortunes and
        fortunes-min share a directory), so there we ask dpkg which files are its own.
        """
        base = self.root / subdir
        if self.root == Path("/"):
            listing = _run(["dpkg-query", "-L", self.name])
            out = listing.stdout.decode(errors="replace") if listing else ""
            paths = [Path(line) for line in out.splitlines() if line.startswith(f"{base}/")]
        else:
            paths = list(base.rglob("*"))
        return sorted(p for p in paths if p.is_file() and not p.is_symlink())

    def source(self, path: Path, detail: str = "") -> str:
        return f"Debian package {self.name} {self.version}: {path.relative_to(self.root)}{detail}"


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[bytes] | None:
    """Run without raising; None means the program itself is missing."""
    try:
        return subprocess.run(cmd, cwd=cwd, check=False, capture_output=True, stdin=subprocess.DEVNULL)
    except OSError:
        return None


_apt_updated = False  # a fresh machine may have empty apt lists; refresh them at most once


def _download(name: str, debs: Path) -> Path | None:
    global _apt_updated
    while (result := _run(["apt-get", "download", name], cwd=debs)) is not None:
        if result.returncode == 0 and (found := sorted(debs.glob(f"{name}_*.deb"))):
            return found[-1]
        if _apt_updated or os.geteuid() != 0:
            _log.debug("apt-get download %s: %s", name, result.stderr.decode(errors="replace").strip())
            break
        _apt_updated = True
        _run(["apt-get", "update", "-qq"])
    return None


def _package(name: str, cache_dir: Path) -> _Package | None:
    """Locate a package's files: installed, else unpacked in the cache, else download it."""
    query = _run(["dpkg-query", "-W", "-f=${Status}\t${Version}", name])
    if query is not None and query.returncode == 0:
        status, _, version = query.stdout.decode().partition("\t")
        if status == "install ok installed":
            return _Package(name, Path("/"), version)
    debs = cache_dir / "debs"
    dest = debs / name
    marker = dest / ".extracted"  # written last, so a half-finished unpack is redone
    if marker.is_file():
        return _Package(name, dest, marker.read_text().strip())
    debs.mkdir(parents=True, exist_ok=True)
    deb = _download(name, debs)
    if deb is None:
        return None
    version = _run(["dpkg-deb", "-f", str(deb), "Version"])
    unpacked = _run(["dpkg", "-x", str(deb), str(dest)])
    deb.unlink()
    if not (version and version.returncode == 0 and unpacked and unpacked.returncode == 0):
        _log.warning("could not unpack %s", deb.name)
        return None
    marker.write_text(version.stdout.decode().strip() + "\n")
    return _Package(name, dest, marker.read_text().strip())


def _read(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def _doc(domain: str, doc_id: str, text: str, source: str, licence: str) -> Document | None:
    """Apply the shared hygiene rules; None for a document too short or mostly undecodable."""
    text = _CONTROL.sub("", text).rstrip().lstrip("\n")
    if len(text) < 500 or text.count("\ufffd") > 0.05 * len(text):
        return None
    return Document(id=doc_id, text=text, domain=domain, source=source, licence=licence)


def _pack(parts: Iterable[str], low: int, high: int, sep: str) -> list[str]:
    """Group consecutive parts: close a group once it reaches ``low`` chars, never grow
    one past ``high`` (a single oversized part stands alone)."""
    groups: list[str] = []
    current: list[str] = []
    size = 0  # length of sep.join(current)
    for part in parts:
        if current and size + len(sep) + len(part) > high:
            groups.append(sep.join(current))
            current, size = [], 0
        size += len(part) + (len(sep) if current else 0)
        current.append(part)
        if size >= low:
            groups.append(sep.join(current))
            current, size = [], 0
    if current:
        groups.append(sep.join(current))
    return groups


# Beyond the obvious exclusions: "tests" (distutils/tests) and charmap codecs generated by
# gencodec.py, ~65 near-identical lookup tables that would dominate any duplicate statistic.
_CODE_SKIP = {"test", "tests", "idlelib", "lib2to3", "site-packages", "__pycache__",
              "tkinter", "turtledemo", "ensurepip"}


def _code(_: dict[str, _Package]) -> Iterator[Document | None]:
    root = Path(sysconfig.get_paths()["stdlib"])
    origin = f"CPython {platform.python_version()} standard library"
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _CODE_SKIP & set(rel.parts) or path.is_symlink() or path.stat().st_size > 200_000:
            continue
        if "gencodec.py" not in (text := _read(path)):
            yield _doc("code", f"code/cpython/{rel.as_posix()}", text, f"{origin}: {rel.as_posix()}", "PSF-2.0")


def _science(pkgs: dict[str, _Package]) -> Iterator[Document | None]:
    if not (pkg := pkgs.get("texlive-science-doc")):
        return
    # Licenses.gz lists "name: tags" followed by that TeX package's paths, which gives a
    # licence per document rather than the whole distribution's "LPPL and others".
    licences: dict[str, str] = {}
    tags = ""
    listing = pkg.root / "usr/share/doc/texlive-science-doc/Licenses.gz"
    for line in _read(listing).splitlines() if listing.is_file() else []:
        if match := re.match(r"texmf-dist/doc/([^/]+/[^/]+)/", line):
            licences.setdefault(match[1], tags)
        elif ":" in line:
            tags = line.split(":", 1)[1].strip()
    base = pkg.root / "usr/share/doc/texlive-doc"
    for path in pkg.files("usr/share/doc/texlive-doc"):
        if not path.name.endswith((".tex", ".tex.gz")):
            continue
        parts = path.relative_to(base).parts  # (category, package, ..., file)
        tags = licences.get("/".join(parts[:2]), "")
        licence = (f"{tags} (TeX Live licence tags, see usr/share/doc/texlive-science-doc/Licenses.gz)"
                   if tags else "LPPL-1.3c and others (see usr/share/doc/texlive-science-doc/copyright)")
        doc_id = "science/texlive/" + "/".join(parts[1:]).removesuffix(".gz")
        yield _doc("science", doc_id, _read(path), pkg.source(path), licence)


def _kjv(pkgs: dict[str, _Package]) -> Iterator[Document | None]:
    """One document per chapter, one verse per line, verse numbers dropped."""
    program, data = pkgs.get("bible-kjv"), pkgs.get("bible-kjv-text")
    if not (program and data):
        return
    result = _run([str(program.root / "usr/bin/bible"), "-p", str(data.root / "usr/lib"), "gen1:1-rev22:21"])
    if result is None or result.returncode != 0 or not result.stdout:
        detail = result.stderr.decode(errors="replace").strip() if result else "program missing"
        _log.warning("books corpus: running the bible program failed (%s); skipping the KJV", detail)
        return
    origin = (f"Debian packages bible-kjv {program.version} + bible-kjv-text {data.version}: "
              "usr/bin/bible -p usr/lib gen1:1-rev22:21")
    chapters: list[tuple[str, int, list[str]]] = []
    for block in re.split(r"\n[ \t]*\n", result.stdout.decode("utf-8", errors="replace")):
        # Headings ("1 Samuel 3") start in column 0; verses are indented ("  3 And ...").
        if heading := re.fullmatch(r"([1-3]? ?[A-Z][A-Za-z ]*) (\d+)", block.strip("\n")):
            chapters.append((heading[1], int(heading[2]), []))
        elif chapters:
            verses = re.split(r"^\s*\d+ ", block, flags=re.M)
            chapters[-1][2].extend(" ".join(v.split()) for v in verses if v.strip())
    for book, number, verses in chapters:
        yield _doc("books", f"books/kjv/{book.lower().replace(' ', '-')}/chapter-{number:03d}", "\n".join(verses),
                   f"{origin} ({book} {number})", "public domain")


_AUSTEN_HEADING = re.compile(r"(chapter|volume)\s+(\d+|[ivxlc]+)\.?", re.IGNORECASE)
_AUSTEN_END = re.compile(r"THE END|FINIS|Finis|A NOTE ON THE TEXT")


def _austen_chapters(lines: Sequence[str]) -> list[str]:
    """Split a novel at chapter headings, dropping front and back matter; a volume heading
    is kept at the top of that volume's first chapter. Wrapped lines become paragraphs."""
    chapters: list[list[str]] = []
    volume: str | None = None
    for line in lines:
        stripped = line.strip()
        if _AUSTEN_END.fullmatch(stripped):
            break
        if heading := _AUSTEN_HEADING.fullmatch(stripped):
            if heading[1].lower() == "volume":
                volume = stripped
            else:
                chapters.append(([volume, ""] if volume else []) + [stripped, ""])
                volume = None
        elif chapters:
            chapters[-1].append(stripped)
    return [
        "\n\n".join(" ".join(p.split("\n")) for p in re.split(r"\n{2,}", "\n".join(ch).strip()))
        for ch in chapters
    ]


def _austen(pkgs: dict[str, _Package]) -> Iterator[Document | None]:
    if not (pkg := pkgs.get("r-cran-janeaustenr")):
        return
    import rdata  # imported here: only this source needs it

    def load(blob: bytes) -> object:
        with warnings.catch_warnings():  # rdata warns "Unknown file type" for lazy-load blobs
            warnings.simplefilter("ignore")
            return rdata.conversion.convert(rdata.parser.parse_data(blob))

    base = pkg.root / "usr/lib/R/site-library/janeaustenr/data/Rdata"
    index = load(gzip.decompress(base.with_suffix(".rdx").read_bytes()))
    raw = base.with_suffix(".rdb").read_bytes()
    # R lazy-load database: each object is a 4-byte length header + zlib stream.
    for name, (offset, length) in index["variables"].items():
        start, end = int(offset), int(offset) + int(length)
        lines = [str(line) for line in load(zlib.decompress(raw[start + 4:end]))]
        for number, text in enumerate(_austen_chapters(lines), 1):
            yield _doc("books", f"books/austen/{name}/chapter-{number:02d}", text,
                       pkg.source(base.with_suffix(".rdb"), f" (object {name})"), "public domain")


def _python_docs(pkgs: dict[str, _Package]) -> Iterator[Document | None]:
    if not (pkg := pkgs.get("python3.11-doc")):
        return
    subdir = "usr/share/doc/python3.11/html/_sources"
    for path in pkg.files(subdir):
        if path.name.endswith(".rst.txt"):
            rel = path.relative_to(pkg.root / subdir).as_posix().removesuffix(".txt")
            yield _doc("general", f"general/python-docs/{rel}", _read(path), pkg.source(path), "PSF-2.0")


def _jargon(pkgs: dict[str, _Package]) -> Iterator[Document | None]:
    """Lexicon entries only: the rendered text interleaves the prose chapters with
    tables of contents, while entries (":term: ...") are cleanly delimited."""
    if not (pkg := pkgs.get("jargon-text")):
        return
    path = pkg.root / "usr/share/doc/jargon-text/jargon.txt.gz"
    entries: list[list[str]] = []
    in_toc = True
    for line in _read(path).split("\n"):
        if re.match(r"   :[^:]+:", line):
            entries.append([line])
            in_toc = False
        elif re.fullmatch(r"  [0-9A-Z]|\s+Part\s+III\.\s+Appendices", line):
            in_toc = True  # a letter heading is followed by that letter's list of terms
        elif not in_toc:
            entries[-1].append(line)
    texts = [textwrap.dedent("\n".join(entry)).strip() for entry in entries]
    for number, text in enumerate(_pack(texts, 3000, 6000, "\n\n"), 1):
        yield _doc("general", f"general/jargon/part-{number:03d}", text, pkg.source(path),
                   "public domain (see usr/share/doc/jargon-text/copyright)")


def _fortunes(pkgs: dict[str, _Package]) -> Iterator[Document | None]:
    for name in ("fortunes-min", "fortunes"):
        if not (pkg := pkgs.get(name)):
            continue
        for path in pkg.files("usr/share/games/fortunes"):
            if path.suffix in (".dat", ".u8"):
                continue
            entries = [e.strip("\n") for e in re.split(r"^%$", _read(path), flags=re.M) if e.strip()]
            for number, text in enumerate(_pack(entries, 2000, 4000, "\n%\n"), 1):
                yield _doc("general", f"general/{name}/{path.name}/part-{number:03d}", text,
                           pkg.source(path), _FORTUNE_LICENCE)


_SOURCES: dict[str, tuple[Callable[[dict[str, _Package]], Iterable[Document | None]], ...]] = {
    "code": (_code,),
    "science": (_science,),
    "books": (_kjv, _austen),
    "general": (_python_docs, _jargon, _fortunes),
}


def collect_domain(domain: str, cache_dir: Path) -> list[Document]:
    """All documents of one domain, sorted by id. Unavailable sources are skipped with a warning."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown corpus domain {domain!r}; expected one of {DOMAINS}")
    pkgs = {name: pkg for name in DEBIAN_PACKAGES[domain] if (pkg := _package(name, Path(cache_dir)))}
    if missing := [name for name in DEBIAN_PACKAGES[domain] if name not in pkgs]:
        _log.warning("%s corpus: Debian packages %s unavailable (apt-get download failed), their sources "
                     "are skipped; to include them run: sudo apt-get install %s",
                     domain, ", ".join(missing), " ".join(missing))
    documents: list[Document] = []
    for source in _SOURCES[domain]:
        try:  # one broken source (e.g. a changed package layout) must not sink the others
            documents.extend(doc for doc in source(pkgs) if doc is not None)
        except Exception:
            _log.warning("%s corpus: source %s failed; skipping it", domain, source.__name__, exc_info=True)
    return sorted(documents, key=lambda doc: doc.id)


def _manifest(domain: str, documents: list[Document], cache_dir: Path) -> dict[str, object]:
    groups: dict[str, list[Document]] = {}
    for doc in documents:
        groups.setdefault(doc.id.split("/")[1], []).append(doc)
    sources: dict[str, object] = {}
    for group, docs in groups.items():
        names = _GROUP_PACKAGES[group]
        versions = dict.fromkeys(p.version for n in names if (p := _package(n, cache_dir)))
        licences = {doc.licence for doc in docs}
        sources[group] = {
            "documents": len(docs),
            "licence": licences.pop() if len(licences) == 1 else "various (see each document)",
            "package": " + ".join(names) or None,
            "version": " + ".join(versions) if names else platform.python_version(),
        }
    return {"domain": domain, "documents": len(documents),
            "characters": sum(len(doc.text) for doc in documents), "sources": sources}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_corpora(cache_dir: Path, domains: Sequence[str] = DOMAINS, *, force: bool = False) -> dict[str, Path]:
    """Write ``<cache_dir>/corpora/<domain>.jsonl`` plus a manifest for each domain.

    A domain whose JSONL exists is left alone unless ``force``; the manifest is written
    first, so an existing JSONL always has its manifest. Returns the JSONL paths of the
    domains that have documents.
    """
    cache_dir = Path(cache_dir)
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ValueError(f"unknown corpus domains {unknown}; expected some of {DOMAINS}")
    out_dir = cache_dir / "corpora"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for domain in domains:
        path = out_dir / f"{domain}.jsonl"
        if path.exists() and not force:
            paths[domain] = path
            continue
        documents = collect_domain(domain, cache_dir)
        if not documents:
            _log.warning("%s corpus: no documents collected; nothing written", domain)
            continue
        manifest = _manifest(domain, documents, cache_dir)
        _write_atomic(out_dir / f"{domain}.manifest.json", json.dumps(manifest, indent=2) + "\n")
        _write_atomic(path, "".join(doc.to_json() + "\n" for doc in documents))
        paths[domain] = path
    return paths
