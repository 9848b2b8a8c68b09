"""ecgcap.ecg.download against a local HTTP server serving two real MIT-BIH records."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest

from conftest import real_dataset
from ecgcap.ecg.download import download_database, read_checksums, sha256_file
from ecgcap.runtime.errors import EXIT_FAILURE, EXIT_USAGE, EcgcapError

SLUG = "mitdb/1.0.0"
RECORDS = ("100", "101")
EXTS = (".hea", ".dat", ".atr")
FILES = [f"{r}{e}" for r in RECORDS for e in EXTS]


def _mitdb_source() -> Path:
    """The real mitdb folder, found through ecgcap's data-location setting (see conftest)."""
    return real_dataset("mitdb")


class _Server:
    """A threaded HTTP server over ``root`` that remembers the paths it was asked for."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                requests.append(self.path)
                super().do_GET()

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.db = root / SLUG

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def source() -> Path:
    return _mitdb_source()


@pytest.fixture
def server(tmp_path, source):
    db = tmp_path / "srv" / SLUG
    db.mkdir(parents=True)
    for name in FILES:
        shutil.copy(source / name, db / name)
    (db / "RECORDS").write_text("\n".join(RECORDS) + "\n")
    real = read_checksums(source / "SHA256SUMS.txt")
    lines = [f"{real[name]} {name}" for name in FILES]  # our RECORDS differs from the real one
    (db / "SHA256SUMS.txt").write_text("\n".join(lines) + "\n")
    srv = _Server(tmp_path / "srv")
    yield srv
    srv.close()


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.rglob("*") if ".tmp" in p.name)


def test_full_download_matches_source_and_reads_with_wfdb(server, source, tmp_path):
    dest = tmp_path / "out" / "mitdb"
    assert download_database(SLUG, dest, base_url=server.base_url, quiet=True) == dest
    for name in FILES:
        assert (dest / name).read_bytes() == (source / name).read_bytes()
    assert (dest / "RECORDS").read_text().split() == list(RECORDS)
    assert (dest / "SHA256SUMS.txt").is_file()
    assert _leftovers(dest) == []

    wfdb = pytest.importorskip("wfdb")
    record = wfdb.rdrecord(str(dest / "100"), sampto=360)
    assert record.fs == 360 and record.p_signal.shape == (360, 2)
    ann = wfdb.rdann(str(dest / "101"), "atr", sampto=3600)
    assert len(ann.sample) > 0


def test_second_call_downloads_nothing(server, tmp_path):
    dest = tmp_path / "out"
    download_database(SLUG, dest, base_url=server.base_url, quiet=True)
    assert len(server.requests) == 2 + len(FILES)  # SHA256SUMS.txt, RECORDS, the records
    mtimes = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    server.requests.clear()
    download_database(SLUG, dest, base_url=server.base_url, quiet=True)
    assert server.requests == []
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == mtimes


def test_resume_refetches_only_missing_or_bad_files(server, source, tmp_path):
    dest = tmp_path / "out"
    download_database(SLUG, dest, base_url=server.base_url, quiet=True)
    (dest / "100.dat").unlink()
    (dest / "101.atr").write_bytes(b"truncated")
    server.requests.clear()
    download_database(SLUG, dest, base_url=server.base_url, quiet=True)
    assert sorted(server.requests) == [f"/{SLUG}/100.dat", f"/{SLUG}/101.atr"]
    for name in ("100.dat", "101.atr"):
        assert (dest / name).read_bytes() == (source / name).read_bytes()


def test_records_argument_limits_the_download(server, tmp_path):
    dest = tmp_path / "out"
    download_database(SLUG, dest, records=["101"], extensions=(".hea",), extra_files=(),
                      base_url=server.base_url, quiet=True)
    assert sorted(p.name for p in dest.iterdir()) == ["101.hea", "SHA256SUMS.txt"]
    assert f"/{SLUG}/RECORDS" not in server.requests


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    served = server.db / "101.dat"
    data = bytearray(served.read_bytes())
    data[1000] ^= 0xFF
    served.write_bytes(bytes(data))
    dest = tmp_path / "out"
    with pytest.raises(EcgcapError, match="101.dat") as info:
        download_database(SLUG, dest, base_url=server.base_url, quiet=True)
    assert info.value.exit_code == EXIT_FAILURE
    assert "checksum" in str(info.value)
    assert not (dest / "101.dat").exists()
    assert _leftovers(dest) == []
    assert not any(p.name.startswith(".") for p in dest.iterdir())


def test_missing_checksums_proceeds_unchecked(server, source, tmp_path):
    (server.db / "SHA256SUMS.txt").unlink()
    dest = tmp_path / "out"
    download_database(SLUG, dest, base_url=server.base_url, quiet=True)
    assert not (dest / "SHA256SUMS.txt").exists()
    for name in FILES:
        assert (dest / name).read_bytes() == (source / name).read_bytes()
    server.requests.clear()
    download_database(SLUG, dest, base_url=server.base_url, quiet=True)
    assert server.requests == [f"/{SLUG}/SHA256SUMS.txt"]  # only the 404 is asked again


def test_file_not_in_checksum_list_is_fetched_unchecked(server, tmp_path):
    sums = server.db / "SHA256SUMS.txt"
    sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines()
                            if not line.endswith("100.hea")))
    dest = tmp_path / "out"
    download_database(SLUG, dest, base_url=server.base_url, quiet=True)
    assert (dest / "100.hea").read_bytes() == (server.db / "100.hea").read_bytes()


def test_missing_record_on_server_is_an_error(server, tmp_path):
    with pytest.raises(EcgcapError, match="404") as info:
        download_database(SLUG, tmp_path / "out", records=["999"], base_url=server.base_url,
                          quiet=True)
    assert info.value.exit_code == EXIT_USAGE
    assert _leftovers(tmp_path / "out") == []


def test_unreachable_server_suggests_data_dir(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EcgcapError) as info:
        download_database(SLUG, tmp_path / "out", base_url=f"http://127.0.0.1:{port}",
                          quiet=True, timeout=5)
    assert "--data-dir" in str(info.value)
    assert "cannot reach" in str(info.value)
    assert info.value.exit_code == EXIT_USAGE == 2


@pytest.mark.parametrize("entry", ["../evil", "sub/../../evil", "/tmp/evil", "a\\..\\evil"])
def test_unsafe_record_names_are_refused(server, tmp_path, entry):
    (server.db / "RECORDS").write_text(f"100\n{entry}\n")
    (server.db / "SHA256SUMS.txt").unlink()
    dest = tmp_path / "out" / "db"
    with pytest.raises(EcgcapError, match="unsafe"):
        download_database(SLUG, dest, base_url=server.base_url, quiet=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["db"]
    assert not list(tmp_path.rglob("evil*"))
    assert not any(r.endswith(".hea") for r in server.requests)


def test_sha256_file_and_read_checksums(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"ecg" * 100_000)
    assert sha256_file(f) == hashlib.sha256(b"ecg" * 100_000).hexdigest()
    h = "a" * 64
    sums = tmp_path / "SHA256SUMS.txt"
    sums.write_text(f"{h}  100.hea\n\n{h.upper()} *sub/101.dat\n   \n")
    assert read_checksums(sums) == {"100.hea": h, "sub/101.dat": h}
    sums.write_text("not a checksum line\n")
    with pytest.raises(EcgcapError, match="line 1"):
        read_checksums(sums)
