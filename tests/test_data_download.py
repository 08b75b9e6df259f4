"""Download and extraction safety against a local HTTP server (127.0.0.1), never the internet."""

import hashlib
import http.server
import io
import socket
import tarfile
import threading
import time
import zipfile

import pytest

from yonos.data import download as dl
from yonos.data import sources
from yonos.data.sources import DatasetInfo, FilePin, Source
from yonos.errors import UserError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `files`; honours `Range: bytes=N-`; the first GET of a path in `cut_once` dies half-way."""

    files: dict = {}
    cut_once: set = set()
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        data = self.files.get(self.path)
        self.requests.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.path in self.cut_once:
            self.cut_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # drop the connection mid-transfer
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    RangeHandler.files, RangeHandler.cut_once, RangeHandler.requests = {}, set(), []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield RangeHandler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_S", 0.01)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_installs(server, tmp_path):
    handler, base = server
    handler.files["/f.bin"] = PAYLOAD
    out = dl.fetch_url(base + "/f.bin", tmp_path / "f.bin", sha256=sha(PAYLOAD))
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "f.bin.part").exists()


def test_interrupted_download_resumes(server, tmp_path):
    handler, base = server
    handler.files["/f.bin"] = PAYLOAD
    handler.cut_once.add("/f.bin")
    out = dl.fetch_url(base + "/f.bin", tmp_path / "f.bin", sha256=sha(PAYLOAD))
    assert out.read_bytes() == PAYLOAD
    ranges = [r for p, r in handler.requests if p == "/f.bin"]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].split("=")[1].rstrip("-")) > 0  # resumed, not restarted


def test_resume_from_leftover_part_file(server, tmp_path):
    handler, base = server
    handler.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:1000])  # left by an earlier, killed run
    dl.fetch_url(base + "/f.bin", tmp_path / "f.bin", sha256=sha(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert handler.requests[0][1] == "bytes=1000-"


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    handler, base = server
    handler.files["/f.bin"] = PAYLOAD
    with pytest.raises(UserError, match="sha256 mismatch"):
        dl.fetch_url(base + "/f.bin", tmp_path / "d" / "f.bin", sha256="0" * 64)
    assert list((tmp_path / "d").iterdir()) == []


def test_http_404_is_a_user_error(server, tmp_path):
    _, base = server
    with pytest.raises(UserError, match="HTTP 404"):
        dl.fetch_url(base + "/missing.zip", tmp_path / "m.zip", sha256=None)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now: connections are refused, as offline
    return port


def test_offline_fails_fast_naming_url_and_folder(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/DIV2K_valid_HR.zip"
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        dl.fetch_url(url, tmp_path / "x.zip", sha256=None, folder_hint="data/div2k_valid_hr")
    assert time.monotonic() - t0 < 10
    assert url in str(err.value) and "data/div2k_valid_hr" in str(err.value)
    assert "\n" not in str(err.value)


def make_tar(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def make_zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_safe_archive_extracts_with_layout(tmp_path):
    arc = tmp_path / "a.tar"
    arc.write_bytes(make_tar([("pack/HR/1.png", b"x"), ("pack/HR/2.png", b"y"), ("pack/readme", b"r"),
                              link("pack/HR/alias.png", "1.png")]))
    out = dl.safe_extract(arc, tmp_path / "data" / "set", (("pack/HR", "hr"),))
    assert sorted(p.name for p in (out / "hr").iterdir()) == ["1.png", "2.png", "alias.png"]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["set"]  # no work folders left


@pytest.mark.parametrize(
    "members",
    [
        [("ok/1.png", b"x"), ("../evil", b"!")],
        [("ok/1.png", b"x"), ("ok/../../evil", b"!")],
        [("ok/1.png", b"x"), ("/tmp/evil-abs", b"!")],
        [("ok/1.png", b"x"), link("ok/ln", "../../outside")],
        [("ok/1.png", b"x"), link("ok/ln", "/etc/passwd")],
        [("ok/1.png", b"x"), link("ok/hard", "../evil", tarfile.LNKTYPE)],
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink-out"],
)
def test_unsafe_tar_rejected_and_nothing_written(tmp_path, members):
    arc = tmp_path / "bad.tar"
    arc.write_bytes(make_tar(members))
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(dl.UnsafeArchive):
        dl.safe_extract(arc, root / "set")
    assert list(root.iterdir()) == []
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name", ["../evil", "/abs/evil", "a/../../evil", "C:/evil"])
def test_unsafe_zip_rejected_and_nothing_written(tmp_path, name):
    arc = tmp_path / "bad.zip"
    arc.write_bytes(make_zip([("ok/1.png", b"x"), (name, b"!")]))
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(dl.UnsafeArchive):
        dl.safe_extract(arc, root / "set")
    assert list(root.iterdir()) == []


def test_install_from_mirror_and_missing_message(tmp_path, monkeypatch):
    from yonos.data.sources import locate

    mirror = tmp_path / "mirror"
    for f in ("lr", "hr"):
        (mirror / "realsr" / f).mkdir(parents=True)
        (mirror / "realsr" / f / "a.png").write_bytes(b"x")
    monkeypatch.delenv("YONOS_DATA_MIRROR", raising=False)
    with pytest.raises(UserError, match="yonos download realsr"):
        locate("realsr", tmp_path / "data")
    assert locate("realsr", tmp_path / "data", source_dir=mirror) == mirror / "realsr"
    out = dl.install("realsr", tmp_path / "data", source_dir=mirror)
    assert (out / "lr" / "a.png").exists() and (out / dl.MARKER).exists()
    assert locate("realsr", tmp_path / "data") == out


def test_install_unpinned_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("YONOS_DATA_MIRROR", raising=False)
    with pytest.raises(UserError, match="UNPINNED: EDSR's benchmark.tar has no published checksum"):
        dl.install("set5", tmp_path / "data")
    assert not (tmp_path / "data" / "set5").exists()


# ---------------------------------------------------------------------------------------------
# Pinned sources, atomic replacement, offline behaviour, argument errors (issue 7, items 7 and 11)


def files_entry(base: str, files: dict[str, bytes], *, sha_override: dict | None = None) -> DatasetInfo:
    """A per-file registry entry served by the local server: hr/<name> -> base/<name>."""
    pins = tuple(FilePin(f"hr/{n}", len(d), (sha_override or {}).get(n, sha(d)), url=f"{base}/{n}")
                 for n, d in files.items())
    return DatasetInfo("toy", "toy set", ("hr",), "classic/toy", (Source("url", base, archive=None, files=pins),),
                       license="test", citation="test")


def archive_entry(base: str, data: bytes, *, name="toy", size=None) -> DatasetInfo:
    src = Source("url", f"{base}/toy.zip", sha256=sha(data), size=len(data) if size is None else size,
                 layout=(("pack/HR", "hr"),))
    return DatasetInfo(name, "toy set", ("hr",), f"classic/{name}", (src,), license="test", citation="test")


def only_the_dataset_left(root, name="toy"):
    """Nothing but data/<name> (and the archive download cache) under the data root."""
    return sorted(p.name for p in root.iterdir() if p.name != ".downloads") == [name]


@pytest.fixture()
def no_mirror(monkeypatch):
    monkeypatch.delenv("YONOS_DATA_MIRROR", raising=False)


def test_per_file_source_downloads_and_verifies_each_file(server, tmp_path, monkeypatch, no_mirror):
    handler, base = server
    files = {"a.png": b"A" * 3000, "b.png": b"B" * 5000}
    handler.files.update({f"/{n}": d for n, d in files.items()})
    monkeypatch.setitem(sources.DATASETS, "toy", files_entry(base, files))
    out = dl.install("toy", tmp_path / "data")
    assert {p.name: p.read_bytes() for p in (out / "hr").iterdir()} == files
    assert only_the_dataset_left(tmp_path / "data")


def test_per_file_hash_mismatch_rejected_and_nothing_left(server, tmp_path, monkeypatch, no_mirror):
    handler, base = server
    files = {"a.png": b"A" * 3000, "b.png": b"B" * 5000}
    handler.files.update({f"/{n}": d for n, d in files.items()})
    monkeypatch.setitem(sources.DATASETS, "toy", files_entry(base, files, sha_override={"b.png": "1" * 64}))
    with pytest.raises(UserError, match="sha256 mismatch"):
        dl.install("toy", tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []  # no a.png, no staging folder, no .part


def test_size_mismatch_rejected_before_the_download(server, tmp_path):
    handler, base = server
    handler.files["/f.bin"] = PAYLOAD
    with pytest.raises(UserError, match="pin says"):
        dl.fetch_url(base + "/f.bin", tmp_path / "d" / "f.bin", sha256=sha(PAYLOAD), size=len(PAYLOAD) + 1)
    assert list((tmp_path / "d").iterdir()) == []


def test_pinned_archive_with_wrong_size_leaves_nothing(server, tmp_path, monkeypatch, no_mirror):
    handler, base = server
    data = make_zip([("pack/HR/1.png", b"x")])
    handler.files["/toy.zip"] = data
    monkeypatch.setitem(sources.DATASETS, "toy", archive_entry(base, data, size=len(data) + 7))
    with pytest.raises(UserError, match="pin says"):
        dl.install("toy", tmp_path / "data")
    leftovers = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert leftovers == []


def test_force_keeps_the_old_copy_when_the_new_one_fails(tmp_path, no_mirror):
    """The reported data loss: a hand-placed Manga109 deleted by `--force` (manual source)."""
    hand = tmp_path / "data" / "manga109" / "hr" / "mine.png"
    hand.parent.mkdir(parents=True)
    hand.write_bytes(b"precious")
    with pytest.raises(UserError, match="no direct download"):
        dl.install("manga109", tmp_path / "data", force=True)
    assert hand.read_bytes() == b"precious"
    assert only_the_dataset_left(tmp_path / "data", "manga109")


def test_force_keeps_the_old_copy_when_offline_or_unpinned(tmp_path, monkeypatch, no_mirror):
    hand = tmp_path / "data" / "set5" / "hr" / "baby.png"
    hand.parent.mkdir(parents=True)
    hand.write_bytes(b"precious")
    with pytest.raises(UserError, match="UNPINNED"):
        dl.install("set5", tmp_path / "data", force=True)
    url = f"http://127.0.0.1:{closed_port()}/benchmark.tar"
    offline = Source("url", url, archive="tar", layout=(("benchmark/Set5/HR", "hr"),), unpinned_reason="test")
    monkeypatch.setitem(sources.DATASETS, "set5", DatasetInfo("set5", "Set5", ("hr",), "classic/set5", (offline,),
                                                              license="t", citation="t"))
    with pytest.raises(UserError, match="cannot reach"):
        dl.install("set5", tmp_path / "data", force=True, allow_unpinned=True)
    assert hand.read_bytes() == b"precious"
    assert only_the_dataset_left(tmp_path / "data", "set5")


def test_force_swaps_in_a_verified_copy(server, tmp_path, monkeypatch, no_mirror):
    handler, base = server
    data = make_zip([("pack/HR/new.png", b"new")])
    handler.files["/toy.zip"] = data
    monkeypatch.setitem(sources.DATASETS, "toy", archive_entry(base, data))
    old = tmp_path / "data" / "toy" / "hr" / "old.png"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old")
    out = dl.install("toy", tmp_path / "data", force=True)
    assert sorted(p.name for p in (out / "hr").iterdir()) == ["new.png"]
    assert only_the_dataset_left(tmp_path / "data")


def test_interrupted_swap_puts_the_old_copy_back(tmp_path, no_mirror):
    root = tmp_path / "data"
    aside = root / ".manga109.old-4242" / "hr"
    aside.mkdir(parents=True)
    (aside / "mine.png").write_bytes(b"precious")
    (root / ".manga109.staging-abc").mkdir()
    assert dl.install("manga109", root) == root / "manga109"  # complete again: nothing to do
    assert (root / "manga109" / "hr" / "mine.png").read_bytes() == b"precious"
    assert only_the_dataset_left(root, "manga109")


def test_archive_missing_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no such file") as err:
        dl.install("div2k_valid_hr", tmp_path / "data", archive=tmp_path / "nope.zip")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data").exists()


def test_archive_not_ignored_when_the_data_exists(tmp_path):
    have = tmp_path / "data" / "set5" / "hr" / "baby.png"
    have.parent.mkdir(parents=True)
    have.write_bytes(b"x")
    arc = tmp_path / "b.tar"
    arc.write_bytes(make_tar([("benchmark/Set5/HR/new.png", b"y")]))
    with pytest.raises(UserError, match="--force"):
        dl.install("set5", tmp_path / "data", archive=arc)
    out = dl.install("set5", tmp_path / "data", archive=arc, force=True)
    assert sorted(p.name for p in (out / "hr").iterdir()) == ["new.png"]


def test_archive_checked_against_the_pin(tmp_path):
    arc = tmp_path / "DIV2K_valid_HR.zip"
    arc.write_bytes(make_zip([("DIV2K_valid_HR/0801.png", b"x")]))
    with pytest.raises(UserError, match="not the pinned DIV2K_valid_HR.zip"):
        dl.install("div2k_valid_hr", tmp_path / "data", archive=arc)
    assert list((tmp_path / "data").iterdir()) == []


def test_source_dir_lacking_the_dataset_names_the_subfolder(tmp_path, no_mirror):
    mirror = tmp_path / "mirror"
    (mirror / "realsr").mkdir(parents=True)
    with pytest.raises(UserError) as err:
        dl.install("drealsr", tmp_path / "data", source_dir=mirror)
    msg = str(err.value)
    assert "lacks drealsr" in msg and str(mirror / "drealsr") in msg and "\n" not in msg
    assert list((tmp_path / "data").iterdir()) == []


def test_mirror_copy_verified_against_per_file_pins(tmp_path, no_mirror):
    """b100 from a mirror holding the right names but one wrong file: rejected, nothing installed."""
    mirror = tmp_path / "mirror"
    folder = mirror / "classic" / "b100"
    folder.mkdir(parents=True)
    for pin in sources.dataset_info("b100").file_pins:
        (folder / pin.path.split("/", 1)[1]).write_bytes(b"not the image")
    with pytest.raises(UserError, match="img_001.png: size"):
        dl.install("b100", tmp_path / "data", source_dir=mirror)
    assert list((tmp_path / "data").iterdir()) == []


def test_mirror_missing_a_pinned_file_is_one_line(tmp_path, no_mirror):
    folder = tmp_path / "mirror" / "train291"
    for pin in sources.dataset_info("train291").file_pins[:-1]:  # all but the last file
        (folder / pin.path).parent.mkdir(parents=True, exist_ok=True)
        (folder / pin.path).write_bytes(b"x")
    last = sources.dataset_info("train291").file_pins[-1].path
    with pytest.raises(UserError, match=f"{last}: missing from the mirror") as err:
        dl.install("train291", tmp_path / "data", source_dir=tmp_path / "mirror")
    assert "\n" not in str(err.value)
    assert list((tmp_path / "data").iterdir()) == []


def test_shared_mirror_installs_train291_and_b100(tmp_path, shared_dir, capsys, no_mirror):
    from yonos.cli import main

    mirror = shared_dir / "datasets"
    if not (mirror / "train291" / "t91").is_dir() or not (mirror / "classic" / "b100").is_dir():
        pytest.skip(f"{mirror}: no train291/ or classic/b100 (set YONOS_SHARED_DIR to the shared folder)")
    root = tmp_path / "data"
    assert main(["download", "train291", "b100", "--source-dir", str(mirror), "--data-root", str(root)]) == 0
    for name, n in (("train291", 291), ("b100", 100)):
        info = sources.dataset_info(name)
        assert len(info.file_pins) == n
        for pin in info.file_pins:
            assert sha((root / name / pin.path).read_bytes()) == pin.sha256
    assert sorted(p.name for p in root.iterdir()) == ["b100", "train291"]


# A fake Hugging Face Hub: HEAD/GET of /datasets/<repo>/resolve/<rev>/<file>, with the headers
# huggingface_hub reads (commit, etag = sha256 for LFS files, size).
class HubHandler(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def log_message(self, *args):
        pass

    def _head(self):
        data = self.files.get(self.path.split("/resolve/main/")[-1])
        if data is None:
            self.send_error(404)
            return None
        self.send_response(200)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", f'"{sha(data)}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return data

    def do_HEAD(self):
        self._head()

    def do_GET(self):
        data = self._head()
        if data is not None:
            self.wfile.write(data)


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    HubHandler.files = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield HubHandler
    httpd.shutdown()
    httpd.server_close()


def hub_entry(data: bytes, *, sha256=None, size=None) -> DatasetInfo:
    src = Source("hf", "someone/testsets", filename="sets.zip", sha256=sha256 or sha(data),
                 size=len(data) if size is None else size, layout=(("Toy/test_LR", "lr"), ("Toy/test_HR", "hr")))
    return DatasetInfo("toy", "toy", ("lr", "hr"), "toy", (src,), license="t", citation="t")


def test_hub_archive_installs_through_a_wrapping_folder(hub, tmp_path, monkeypatch, no_mirror):
    data = make_zip([("StableSR_testsets/Toy/test_LR/1.png", b"l"), ("StableSR_testsets/Toy/test_HR/1.png", b"h")])
    hub.files["sets.zip"] = data
    monkeypatch.setitem(sources.DATASETS, "toy", hub_entry(data))
    out = dl.install("toy", tmp_path / "data")
    assert (out / "lr" / "1.png").read_bytes() == b"l" and (out / "hr" / "1.png").read_bytes() == b"h"


@pytest.mark.parametrize("pin", ["size", "sha256"])
def test_hub_file_differing_from_the_pin_is_not_downloaded(hub, tmp_path, monkeypatch, pin, no_mirror):
    data = make_zip([("Toy/test_LR/1.png", b"l"), ("Toy/test_HR/1.png", b"h")])
    hub.files["sets.zip"] = data
    entry = hub_entry(data, size=len(data) + 1) if pin == "size" else hub_entry(data, sha256="2" * 64)
    monkeypatch.setitem(sources.DATASETS, "toy", entry)
    with pytest.raises(UserError, match="nothing was downloaded"):
        dl.install("toy", tmp_path / "data")
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == []


def test_hub_offline_fails_fast_in_one_line(tmp_path, monkeypatch, capsys, no_mirror):
    """Unreachable Hub endpoint: one line, well under 10 s (was 25 s with 14 lines of retries)."""
    from yonos.cli import main

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.monotonic()
    assert main(["download", "realsr", "--allow-unpinned", "--data-root", str(tmp_path / "data")]) == 2
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err.strip()
    assert elapsed < 10, elapsed
    assert len(err.splitlines()) == 1 and "cannot reach" in err and "realsr" in err, err
    assert not (tmp_path / "data" / "realsr").exists()


def test_hub_offline_mode_fails_at_once(tmp_path, monkeypatch, no_mirror):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        dl.install("drealsr", tmp_path / "data", allow_unpinned=True)
    assert time.monotonic() - t0 < 5
