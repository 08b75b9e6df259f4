"""Fetch and install datasets safely: resumable download, checksum first, all-or-nothing extraction.

    fetch_url(url, dest, sha256=...)      -> dest, downloaded through dest.part with HTTP Range resume
    safe_extract(archive, target, layout) -> target, only if every member is safe
    install(name, data_root, source_dir)  -> data/<name>, from a mirror folder/archive or the registry

Nothing is replaced until its successor is complete: every install is built and verified in a hidden
staging folder beside the target (`data/.<name>.staging-*`) and swapped in by renames, so a failed,
offline or unpinned `--force` reinstall leaves the old copy exactly as it was.

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
import logging
import os
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from yonos.data.sources import (
    MIRROR_ENV,
    DatasetInfo,
    FilePin,
    Source,
    dataset_info,
    is_complete,
    mirror_dir,
    pinned_path,
    subfolder,
)
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


class _SizeMismatch(Exception):
    """The server announces a different size than the pin: stop before downloading the rest."""


def _transfer(url: str, part: Path, timeout: float, size: int | None = None) -> None:
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
        if size is not None and total is not None and total != size:
            raise _SizeMismatch(total)
        with open(part, "ab" if offset else "wb") as f, _progress(total, offset, part.name[:-5]) as bar:
            while block := resp.read(CHUNK):
                f.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise ConnectionError(f"transfer ended early at {part.stat().st_size} of {total} bytes")


def _matches(path: Path, sha256: str | None, size: int | None) -> str | None:
    """None when `path` has the pinned size and sha256, else what differs (one phrase)."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"size {actual_size} B, pinned {size} B"
    if sha256:
        actual = sha256_of(path)
        if actual != sha256.lower():
            return f"sha256 mismatch (expected {sha256}, got {actual})"
    return None


def fetch_url(url: str, dest: str | os.PathLike, *, sha256: str | None, size: int | None = None,
              folder_hint: str | None = None, timeout: float = CONNECT_TIMEOUT_S) -> Path:
    """Download `url` to `dest` through `dest.part` (kept between runs, so a rerun resumes). `dest`
    appears only when complete and, if `sha256`/`size` are given, matching; a mismatch deletes
    everything. An existing `dest` that matches its pinned sha256 is reused without a download."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and sha256:
        if _matches(dest, sha256, size) is None:
            return dest
        dest.unlink()  # a stale or corrupt earlier download: fetch it again
    connect_failures, transfer_failures = 0, 0
    while True:
        try:
            _transfer(url, part, timeout, size)
            break
        except _SizeMismatch as exc:
            part.unlink(missing_ok=True)
            raise UserError(f"{url}: the server offers {exc.args[0]} B, the pin says {size} B; nothing was "
                            f"downloaded (the source changed: check the registry pin)") from None
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or transfer_failures >= TRANSFER_RETRIES:
                raise UserError(f"{url}: HTTP {exc.code} {exc.reason}; {_by_hand(url, folder_hint)}") from None
            transfer_failures += 1
        except (OSError, http.client.HTTPException) as exc:
            # nothing received yet (refused, unreachable, DNS, connect timeout): likely offline
            if not (part.exists() and part.stat().st_size > 0):
                connect_failures += 1
                if connect_failures >= CONNECT_ATTEMPTS or _is_refused(exc):
                    raise UserError(f"cannot reach {url} ({_reason(exc)}); {_by_hand(url, folder_hint)}") from None
                time.sleep(BACKOFF_S)
                continue
            transfer_failures += 1
            if transfer_failures > TRANSFER_RETRIES:
                raise UserError(f"{url}: download kept failing ({_reason(exc)}); rerun to resume, or "
                                f"{_by_hand(url, folder_hint)}") from None
        time.sleep(BACKOFF_S * 2 ** min(transfer_failures, 5))  # exponential backoff, capped
    problem = _matches(part, sha256, size)
    if problem:
        part.unlink()
        raise UserError(f"{url}: {problem}; the file was deleted")
    os.replace(part, dest)
    return dest


def _is_refused(exc: BaseException) -> bool:
    """Connection refused or a name that does not resolve: retrying will not help, fail at once."""
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, (ConnectionRefusedError, socket.gaierror))


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
    tops = [p for p in raw.iterdir() if p.is_dir()]
    if len(tops) == 1 and not all((raw / src).is_dir() for src, _ in layout):
        raw = tops[0]  # the archive wraps everything in one folder (StableSR_testsets/...)
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


def install_root(info: DatasetInfo, data_root: str | os.PathLike, weights_root: str | os.PathLike) -> Path:
    return Path(weights_root if info.category == "weights" else data_root)


def install(name: str, data_root: str | os.PathLike = "data", *, source_dir=None, archive=None,
            allow_unpinned: bool = False, force: bool = False, weights_root: str | os.PathLike = "weights") -> Path:
    """Put `name` into <root>/name from, in order: a local archive, the mirror folder (`source_dir` or
    $YONOS_DATA_MIRROR), the registry's sources. Returns the installed folder. The new copy is built
    and verified in a staging folder; an existing copy (with `force`) is replaced only after that."""
    info = dataset_info(name)
    root = install_root(info, data_root, weights_root)
    target = root / name
    if archive is not None and not Path(archive).is_file():
        raise UserError(f"--archive {archive}: no such file; give the path of the archive you downloaded")
    remove_partial(target)
    if is_complete(target, info) and not force:
        if archive is not None:
            raise UserError(f"{target} is already installed, so --archive {archive} was not used; "
                            f"pass --force to replace it from the archive")
        return target
    if target.exists() and not force:
        raise UserError(f"{target} exists but is incomplete (needs {_needs(info)}); remove it or pass --force")
    mirror = mirror_dir(source_dir)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=root))
    new = staging / name
    try:
        if archive is not None:
            provenance = _install_archive(info, Path(archive), new)
        elif mirror is not None and is_complete(mirror / info.mirror, info):
            provenance = copy_from_mirror(mirror / info.mirror, new, info)
        else:
            if mirror is not None:
                lacks = (f"mirror {mirror} lacks {name}: expected {mirror / info.mirror}/ with {_needs(info)}")
                if source_dir is not None:  # asked for explicitly: never fall back to the network
                    raise UserError(f"--source-dir {lacks}")
                print(f"{name}: ${MIRROR_ENV} {lacks}; trying the registered source", file=sys.stderr)
            provenance = _install_from_sources(info, new, root, allow_unpinned)
        _finish(new, info, provenance)
        _swap_in(new, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _needs(info: DatasetInfo) -> str:
    if info.file_pins:
        return f"the {len(info.file_pins)} pinned files ({info.file_pins[0].path}, ...)"
    return ", ".join(f"{f}/" for f in info.folders)


def _swap_in(new: Path, target: Path) -> None:
    """Rename `new` onto `target`. An existing target is first renamed aside (hidden sibling) and
    deleted only once `new` is in place; if the second rename fails, the old copy is put back."""
    if not (target.exists() or target.is_symlink()):
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _install_archive(info: DatasetInfo, archive: Path, new: Path) -> dict:
    """Extract a user-supplied archive, after checking it against the registry pin when there is one."""
    src = info.sources[0] if info.sources else None
    if info.file_pins:
        raise UserError(f"{info.name} is installed file by file (each pinned by sha256), not from an archive; "
                        f"unpack {archive} into a folder laid out as {info.mirror}/ and pass its parent "
                        f"with --source-dir")
    if src is not None and src.pinned:
        problem = _matches(archive, src.sha256, src.size)
        if problem:
            raise UserError(f"{archive}: not the pinned {src.filename or PurePosixPath(src.location).name} "
                            f"({problem}); nothing was installed")
    safe_extract(archive, new, src.layout if src else ())
    return {"archive": archive.name, "sha256": sha256_of(archive), "verified": bool(src and src.pinned)}


def copy_from_mirror(src: Path, new: Path, info: DatasetInfo) -> dict:
    """Copy a mirror's copy into `new`. Per-file pinned entries: only the pinned files, each checked
    against its size and sha256 (a mismatch rejects the whole copy); others: the expected folders."""
    if not info.file_pins:
        new.mkdir(parents=True)
        for f in info.folders:
            shutil.copytree(subfolder(src, info, f), new / f, symlinks=False,
                            ignore=lambda d, names: [n for n in names if (Path(d) / n).is_dir()])
        return {"mirror": info.mirror, "verified": False}
    missing = [pinned_path(src, info, p.path) for p in info.file_pins if not pinned_path(src, info, p.path).is_file()]
    if missing:  # before copying anything
        raise UserError(f"{missing[0]}: missing from the mirror's copy of {info.name} ({len(missing)} of the "
                        f"{len(info.file_pins)} pinned files are absent); nothing was installed")
    for pin in info.file_pins:
        found = pinned_path(src, info, pin.path)
        dest = new / pin.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found, dest)
        problem = _matches(dest, pin.sha256, pin.size)
        if problem:
            raise UserError(f"{found}: {problem}; the mirror holds a different or corrupt file, nothing was "
                            f"installed")
    return {"mirror": info.mirror, "verified": _verified(info.file_pins)}


def _verified(pins: tuple[FilePin, ...]) -> str:
    hashed = sum(1 for p in pins if p.sha256)
    return f"{hashed}/{len(pins)} files by sha256" + ("" if hashed == len(pins) else ", the rest by size")


def _install_from_sources(info: DatasetInfo, new: Path, root: Path, allow_unpinned: bool) -> dict:
    if not info.sources:
        raise UserError(f"{info.name}: no source registered")
    src = info.sources[0]
    if src.kind == "manual":
        raise UserError(f"{info.name}: no direct download ({src.unpinned_reason or 'fetch by hand'}); fetch it "
                        f"from {src.location} and put {_needs(info)} in {root / info.name}")
    if not src.pinned and not allow_unpinned:
        raise UserError(f"{info.name}: {src.pin_summary()}; rerun with --allow-unpinned to accept it (the "
                        f"sha256 is printed to record in yonos/data/pins/)")
    if src.files:
        return _fetch_files(info, src, new, root)
    downloaded = _fetch_source(src, root, info.name)
    digest = sha256_of(downloaded)
    if src.archive:
        safe_extract(downloaded, new, src.layout)
    else:
        new.mkdir(parents=True)
        shutil.copy2(downloaded, new / downloaded.name)
    if not src.pinned:
        print(f"{info.name}: unpinned source; size = {downloaded.stat().st_size} B, sha256 = {digest}")
    return {"source": src.location, "filename": src.filename, "revision": src.revision, "sha256": digest,
            "verified": src.pinned}


def _fetch_files(info: DatasetInfo, src: Source, new: Path, root: Path) -> dict:
    """Per-file source: fetch every pinned file straight into the staging folder, each verified."""
    for pin in src.files:
        dest = new / pin.path
        if src.kind == "url":
            fetch_url(pin.url, dest, sha256=pin.sha256, size=pin.size, folder_hint=str(root / info.name))
        else:
            cached = _fetch_hf(src, pin.path, root / ".downloads", root / info.name, sha256=pin.sha256, size=pin.size)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(cached.resolve(), dest)  # same file system: no second copy of a multi-GB checkpoint
            except OSError:
                shutil.copy2(cached, dest)
        if not pin.sha256:
            print(f"{info.name}: {pin.path} has no pinned sha256; size = {dest.stat().st_size} B, "
                  f"sha256 = {sha256_of(dest)}")
    return {"source": src.location, "files": len(src.files), "verified": _verified(src.files)}


def _fetch_source(src: Source, root: Path, name: str) -> Path:
    cache = root / ".downloads"
    if src.kind == "url":
        return fetch_url(src.location, cache / PurePosixPath(src.location).name, sha256=src.sha256, size=src.size,
                         folder_hint=str(root / name))
    if src.kind == "hf":
        return _fetch_hf(src, src.filename, cache, root / name, sha256=src.sha256, size=src.size)
    raise UserError(f"unknown source kind {src.kind!r}")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _fetch_hf(src: Source, filename: str, cache: Path, target: Path, *, sha256: str | None,
              size: int | None) -> Path:
    """One file of a Hub repo, through huggingface_hub's cache, verified against the pin.

    Offline must fail fast and in one line: hf_hub_download retries a failed connection five times
    with backoff (~25 s, a log line each), so one metadata request without retries goes first
    (it also rejects a size or LFS sha256 that differs from the pin before anything is downloaded)."""
    import huggingface_hub as hub
    from huggingface_hub.errors import HfHubHTTPError

    where = f"hf.co/{'datasets/' if src.repo_type == 'dataset' else ''}{src.location}/{filename}"
    by_hand = f"if offline, put the data in {target} by hand (or pass --source-dir)"
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, not at import: tests and users may set it late
    kwargs = dict(repo_type=src.repo_type, revision=src.revision, cache_dir=str(cache / "hf"), endpoint=endpoint)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # one line from us, not the hub's retries
    if _hub_offline():
        try:
            path = Path(hub.hf_hub_download(src.location, filename, local_files_only=True, **kwargs))
        except Exception:  # not cached
            raise UserError(f"{where}: not in the local cache and HF_HUB_OFFLINE is set; {by_hand}") from None
    else:
        url = hub.hf_hub_url(src.location, filename, repo_type=src.repo_type, revision=src.revision,
                             endpoint=endpoint)
        try:
            meta = hub.get_hf_file_metadata(url, timeout=CONNECT_TIMEOUT_S, endpoint=endpoint)  # no retries
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "error"
            raise UserError(f"{where}: HTTP {status} ({type(exc).__name__}); {by_hand}") from None
        except Exception as exc:  # connection refused, DNS, timeout, offline mode: the hub is unreachable
            raise UserError(f"cannot reach {where} ({_reason(exc)}); {by_hand}") from None
        if size is not None and meta.size is not None and meta.size != size:
            raise UserError(f"{where}: the Hub offers {meta.size} B, the pin says {size} B; nothing was downloaded")
        etag = (meta.etag or "").strip('"')
        if sha256 and len(etag) == 64 and etag != sha256:  # an LFS file's etag is its sha256
            raise UserError(f"{where}: the Hub's sha256 is {etag}, the pin says {sha256}; nothing was downloaded")
        try:
            path = Path(hub.hf_hub_download(src.location, filename, etag_timeout=CONNECT_TIMEOUT_S, **kwargs))
        except Exception as exc:  # hub errors have many types; all mean "could not get the file"
            raise UserError(f"cannot fetch {where} ({type(exc).__name__}: {_reason(exc)}); {by_hand}") from None
    problem = _matches(path, sha256, size)
    if problem:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise UserError(f"{where}: {problem}; the downloaded file was deleted")
    return path


def _finish(target: Path, info: DatasetInfo, provenance: dict) -> Path:
    if not is_complete(target, info):
        raise UserError(f"{info.name}: the source did not contain {_needs(info)}; nothing was kept")
    write_json(target / MARKER, {"dataset": info.name, "license": info.license, "citation": info.citation,
                                 **provenance})
    return target


def remove_partial(target: Path) -> None:
    """Clean up after an interrupted install: delete staging/work folders; an old copy renamed aside
    by an interrupted swap goes back in place if the target is missing, else it is deleted."""
    for p in sorted(target.parent.glob(f".{target.name}.*-*")):
        if ".old-" in p.name and not (target.exists() or target.is_symlink()):
            os.replace(p, target)
            continue
        with contextlib.suppress(OSError):
            _remove(p)
