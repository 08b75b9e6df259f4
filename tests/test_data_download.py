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
    with pytest.raises(UserError, match="not pinned"):
        dl.install("div2k_valid_hr", tmp_path / "data")
    assert not (tmp_path / "data" / "div2k_valid_hr").exists()
