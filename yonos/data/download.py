"""Fetch and install datasets safely: resumable download, checksum first, all-or-nothing extraction.

    fetch_url(url, dest, sha256=...)      -> dest, downloaded through dest.part with HTTP Range resume
    safe_extract(archive, target, layout) -> target, only if every member is safe
    install(name, data_root, source_dir)  -> data/<name>, from a mirror folder/archive or the registry

Why the extraction is our own code: zipfile silently rewrites unsafe member names instead of rejecting
them and extracts symlinks as plain files; tarfile's `filter="data"` rejects unsafe members but only
as it reaches them, after earlier members are written; shutil.unpack_archive has neither. We vet every
member first (tarfile's data filter included), extract into a hidden sibling folder and rename it into
place, so a failure at any point leaves nothing in `data/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from yonos.data.sources import DatasetInfo, Source, dataset_info, is_complete, mirror_dir, subfolder
from yonos.errors import UserError
from yonos.io import write_json

CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 3.0  # per attempt; with CONNECT_ATTEMPTS and backoff, offline fails in < 10 s
CONNECT_ATTEMPTS = 2
TRANSFER_RETRIES = 5  # interrupted transfers resume; only these retry with the longer backoff
BACKOFF_S = 0.5
MARKER = ".yonos-source.json"  # written last into an installed dataset: its provenance


class UnsafeArchive(UserError):
    """An archive member would land outside the target (absolute path, `..`, escaping link)."""


# ---------------------------------------------------------------------------------------------
# Download


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _progress(total: int | None, initial: int, desc: str):
    from tqdm.auto import tqdm

    # disable=None: a bar on a terminal, silence in logs and CI
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=desc, disable=None)


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "yonos-bench", **({"Range": f"bytes={offset}-"} if offset else {})}
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _transfer(url: str, part: Path, timeout: float) -> None:
    """Append the rest of `url` to `part`, resuming from its current size."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range past the end: the partial file is already complete
            return
        raise
    with resp:
        if offset and resp.status != 206:  # server ignored Range: start over
            offset = 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as f, _progress(total, offset, part.name[:-5]) as bar:
            while block := resp.read(CHUNK):
                f.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise ConnectionError(f"transfer ended early at {part.stat().st_size} of {total} bytes")


def fetch_url(url: str, dest: str | os.PathLike, *, sha256: str | None, folder_hint: str | None = None,
              timeout: float = CONNECT_TIMEOUT_S) -> Path:
    """Download `url` to `dest` through `dest.part` (kept between runs, so a rerun resumes). `dest`
    appears only when complete and, if `sha256` is given, matching; a mismatch deletes everything."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    connect_failures, transfer_failures = 0, 0
    while True:
        try:
            _transfer(url, part, timeout)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or transfer_failures >= TRANSFER_RETRIES:
                raise UserError(f"{url}: HTTP {exc.code} {exc.reason}; {_by_hand(url, folder_hint)}") from None
            transfer_failures += 1
        except (OSError, http.client.HTTPException) as exc:
            # nothing received yet (refused, unreachable, DNS, connect timeout): likely offline
            if not (part.exists() and part.stat().st_size > 0):
                connect_failures += 1
                if connect_failures >= CONNECT_ATTEMPTS:
                    raise UserError(f"cannot reach {url} ({_reason(exc)}); {_by_hand(url, folder_hint)}") from None
                time.sleep(BACKOFF_S)
                continue
            transfer_failures += 1
            if transfer_failures > TRANSFER_RETRIES:
                raise UserError(f"{url}: download kept failing ({_reason(exc)}); rerun to resume, or "
                                f"{_by_hand(url, folder_hint)}") from None
        time.sleep(BACKOFF_S * 2 ** min(transfer_failures, 5))  # exponential backoff, capped
    if sha256:
        actual = sha256_of(part)
        if actual != sha256.lower():
            part.unlink()
            raise UserError(f"{url}: sha256 mismatch (expected {sha256}, got {actual}); the file was deleted")
    os.replace(part, dest)
    return dest


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    return str(reason) or type(reason).__name__


def _by_hand(url: str, folder: str | None) -> str:
    where = folder or "the data folder"
    return f"if offline, download {url} elsewhere and unpack it into {where} (or pass --source-dir)"


# ---------------------------------------------------------------------------------------------
# Safe extraction


def _check_name(name: str) -> PurePosixPath:
    """Reject absolute paths, drive letters and `..`; return the normalised relative path."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or (p.parts and ":" in p.parts[0]) or ".." in p.parts:
        raise UnsafeArchive(f"unsafe archive member {name!r} (absolute path or '..'); nothing was extracted")
    return p


def _check_link(name: PurePosixPath, link: str) -> None:
    """A link must resolve inside the archive root (relative to its own folder)."""
    target = PurePosixPath(link.replace("\\", "/"))
    if target.is_absolute():
        raise UnsafeArchive(f"unsafe link {str(name)!r} -> {link!r}; nothing was extracted")
    depth = 0
    for part in (name.parent / target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            raise UnsafeArchive(f"link {str(name)!r} -> {link!r} escapes the target; nothing was extracted")


def vet_tar(tf: tarfile.TarFile, root: Path) -> None:
    for m in tf.getmembers():
        name = _check_name(m.name)
        if m.issym():
            _check_link(name, m.linkname)  # relative to the link's own folder
        elif m.islnk():
            _check_name(m.linkname)  # hard links name another member, relative to the root
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchive(f"archive member {m.name!r} is a device or fifo; nothing was extracted")
        try:
            tarfile.data_filter(m, str(root))  # stdlib's own check, without writing anything
        except tarfile.FilterError as exc:
            raise UnsafeArchive(f"unsafe archive member {m.name!r} ({exc}); nothing was extracted") from None


def vet_zip(zf: zipfile.ZipFile) -> None:
    for info in zf.infolist():
        _check_name(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):  # zipfile would write the link text as a file
            raise UnsafeArchive(f"archive member {info.filename!r} is a symlink; nothing was extracted")


def archive_kind(path: Path) -> str:
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise UserError(f"{path}: neither a zip nor a tar archive")


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike,
                 layout: tuple[tuple[str, str], ...] = ()) -> Path:
    """Extract `archive` so that `target` appears complete or not at all. `layout` maps folders in
    the archive to folders under target; empty = the archive's tree as is. `target` must not exist."""
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise UserError(f"{target} already exists; remove it to reinstall")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.extracting-", dir=target.parent))
    try:
        raw = work / "raw"
        raw.mkdir()
        if archive_kind(archive) == "zip":
            with zipfile.ZipFile(archive) as zf:
                vet_zip(zf)
                zf.extractall(raw)
        else:
            with tarfile.open(archive) as tf:
                vet_tar(tf, raw)
                tf.extractall(raw, filter="data")
        staged = _apply_layout(raw, work / "final", layout)
        os.replace(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _apply_layout(raw: Path, final: Path, layout) -> Path:
    if not layout:
        return raw
    final.mkdir()
    for src, dst in layout:
        if not (raw / src).is_dir():
            found = ", ".join(sorted(p.name for p in raw.iterdir())) or "nothing"
            raise UserError(f"archive has no folder {src!r} (top level: {found}); the registry layout is stale")
        (final / dst).parent.mkdir(parents=True, exist_ok=True)
        os.replace(raw / src, final / dst)
    return final


# ---------------------------------------------------------------------------------------------
# Installing a registered dataset


def copy_folder_atomic(src: Path, target: Path, info: DatasetInfo) -> Path:
    """Copy the expected sub-folders of `src` into `target` via a hidden sibling and one rename."""
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.copying-", dir=target.parent))
    try:
        for f in info.folders:
            shutil.copytree(subfolder(src, info, f), work / f, symlinks=False,
                            ignore=lambda d, names: [n for n in names if (Path(d) / n).is_dir()])
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def install(name: str, data_root: str | os.PathLike = "data", *, source_dir=None, archive=None,
            allow_unpinned: bool = False, force: bool = False) -> Path:
    """Put dataset `name` into data_root/name from, in order: a local archive, the mirror folder
    (`source_dir` or $YONOS_DATA_MIRROR), the registry's sources. Returns the installed folder."""
    info = dataset_info(name)
    target = Path(data_root) / name
    if is_complete(target, info) and not force:
        return target
    remove_partial(target)
    if target.exists():
        if not force:
            raise UserError(f"{target} exists but is incomplete (needs {', '.join(info.folders)}); "
                            f"remove it or pass --force")
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if archive is not None:
        safe_extract(archive, target, info.sources[0].layout if info.sources else ())
        return _finish(target, info, {"archive": str(archive), "sha256": sha256_of(archive)})
    mirror = mirror_dir(source_dir)
    if mirror is not None and is_complete(mirror / info.mirror, info):
        copy_folder_atomic(mirror / info.mirror, target, info)
        return _finish(target, info, {"mirror": str(mirror / info.mirror)})
    return _install_from_sources(info, target, allow_unpinned)


def _install_from_sources(info: DatasetInfo, target: Path, allow_unpinned: bool) -> Path:
    for src in info.sources:
        if src.kind == "manual":
            raise UserError(f"{info.name}: no direct download; fetch it from {src.location} and put "
                            f"{', '.join(info.folders)} folders in {target}")
        if not src.pinned and not allow_unpinned:
            raise UserError(f"{info.name}: source {src.location} is not pinned by sha256/revision yet; "
                            f"rerun with --allow-unpinned and record the printed sha256 in yonos/data/sources.py")
        downloaded = _fetch_source(src, target)
        digest = sha256_of(downloaded)
        try:
            if src.archive:
                safe_extract(downloaded, target, src.layout)
            else:
                target.mkdir()
                shutil.copy2(downloaded, target / downloaded.name)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        if not src.pinned:
            print(f"{info.name}: unpinned source; sha256 = {digest}")
        return _finish(target, info, {"source": src.location, "filename": src.filename,
                                      "revision": src.revision, "sha256": digest})
    raise UserError(f"{info.name}: no source registered")


def _fetch_source(src: Source, target: Path) -> Path:
    cache = target.parent / ".downloads"
    if src.kind == "url":
        return fetch_url(src.location, cache / PurePosixPath(src.location).name, sha256=src.sha256,
                         folder_hint=str(target))
    if src.kind == "hf":
        return _fetch_hf(src, cache, target)
    raise UserError(f"unknown source kind {src.kind!r}")


def _fetch_hf(src: Source, cache: Path, target: Path) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(src.location, src.filename, repo_type="dataset", revision=src.revision,
                                    cache_dir=str(cache / "hf")))
    except Exception as exc:  # hub errors have many types; all mean "could not get the file"
        raise UserError(f"cannot fetch {src.filename} from hf.co/datasets/{src.location} "
                        f"({type(exc).__name__}); if offline, put the data in {target} by hand") from None
    if src.sha256 and sha256_of(path) != src.sha256:
        raise UserError(f"{path}: sha256 mismatch for {src.location}/{src.filename}")
    return path


def _finish(target: Path, info: DatasetInfo, provenance: dict) -> Path:
    if not is_complete(target, info):
        shutil.rmtree(target, ignore_errors=True)
        raise UserError(f"{info.name}: the source did not contain {', '.join(info.folders)}; nothing was kept")
    write_json(target / MARKER, {"dataset": info.name, "license": info.license, "citation": info.citation,
                                 **provenance})
    return target


def remove_partial(target: Path) -> None:
    """Delete leftovers of an interrupted install (hidden work folders), never the data itself."""
    for p in target.parent.glob(f".{target.name}.*-*"):
        with contextlib.suppress(OSError):
            shutil.rmtree(p)
