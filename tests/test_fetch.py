"""hotdog.data.fetch against real HTTP servers on 127.0.0.1 and local files."""

from __future__ import annotations

import hashlib
import random
import socket
from pathlib import Path

import pytest
from servers import (
    Seen,
    serve_directory,
    serve_ignoring_range,
    serve_truncating,
    serve_unavailable,
)

from hotdog.core.errors import StageError
from hotdog.data import fetch as fetch_module
from hotdog.data.fetch import DigestMismatch, DownloadError, FetchError, SourceError, fetch

PAYLOAD = random.Random(0).randbytes(300_000)  # several chunks, so a cut lands mid-stream
SHA1 = hashlib.sha1(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_module, "BASE_DELAY", 0.001)
    monkeypatch.setattr(fetch_module, "TIMEOUT", 5.0)


@pytest.fixture
def served(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "blob.bin").write_bytes(PAYLOAD)
    return root


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "out" / "blob.bin"


def leftovers(dest: Path) -> list[str]:
    """Whatever fetch left in dest's folder: must be nothing after a failure."""
    return sorted(p.name for p in dest.parent.iterdir()) if dest.parent.exists() else []


def test_fetch_over_http_writes_the_verified_file(served: Path, dest: Path) -> None:
    with serve_directory(served) as url:
        assert fetch(f"{url}/blob.bin", dest, "sha256", SHA256) == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest) == ["blob.bin"]  # no .part left beside it


def test_fetch_accepts_a_digest_prefix(served: Path, dest: Path) -> None:
    with serve_directory(served) as url:
        fetch(f"{url}/blob.bin", dest, "sha256", SHA256[:8].upper())
    assert dest.read_bytes() == PAYLOAD


def test_fetch_refuses_a_prefix_too_short_to_mean_anything(served: Path, dest: Path) -> None:
    with pytest.raises(FetchError, match="at least 8 hex digits"):
        fetch(str(served / "blob.bin"), dest, "sha256", SHA256[:7])
    assert leftovers(dest) == []


def test_digest_mismatch_names_everything_and_leaves_nothing(served: Path, dest: Path) -> None:
    wrong = "0" * 40
    log: list[Seen] = []
    with serve_directory(served, log=log) as url:
        with pytest.raises(DigestMismatch) as err:
            fetch(f"{url}/blob.bin", dest, "sha1", wrong, section="data")
    message = str(err.value)
    assert "\n" not in message
    for part in (f"{url}/blob.bin", "sha1", wrong, SHA1, "data.sha1", "data.url"):
        assert part in message
    assert leftovers(dest) == []
    assert len(log) == 1  # a digest mismatch is not retried
    assert not issubclass(DigestMismatch, DownloadError)


def test_resumes_with_range_after_a_dropped_connection(served: Path, dest: Path) -> None:
    log: list[Seen] = []
    with serve_truncating(served, times=1, ranges=True, log=log) as url:
        fetch(f"{url}/blob.bin", dest, "sha1", SHA1)
    assert dest.read_bytes() == PAYLOAD
    assert [s.status for s in log] == [200, 206]
    assert 0 < log[0].sent < len(PAYLOAD)
    assert log[1].range == f"bytes={log[0].sent}-"
    assert log[0].sent + log[1].sent == len(PAYLOAD)


def test_restarts_when_the_server_ignores_range(served: Path, dest: Path) -> None:
    log: list[Seen] = []
    with serve_truncating(served, times=1, ranges=False, log=log) as url:
        fetch(f"{url}/blob.bin", dest, "sha1", SHA1)
    assert dest.read_bytes() == PAYLOAD
    assert [s.status for s in log] == [200, 200]
    assert log[1].range == f"bytes={log[0].sent}-"  # asked to resume, got the whole body
    assert log[1].sent == len(PAYLOAD)


def test_a_server_that_ignores_range_serves_whole_files(served: Path, dest: Path) -> None:
    log: list[Seen] = []
    with serve_ignoring_range(served, log=log) as url:
        fetch(f"{url}/blob.bin", dest, "sha1", SHA1)
    assert dest.read_bytes() == PAYLOAD
    assert [(s.status, s.range) for s in log] == [(200, None)]


def test_gives_up_on_a_server_that_always_truncates(served: Path, dest: Path) -> None:
    log: list[Seen] = []
    with serve_truncating(served, times=None, log=log) as url:
        with pytest.raises(DownloadError) as err:
            fetch(f"{url}/blob.bin", dest, "sha1", SHA1, section="data")
    message = str(err.value)
    assert "\n" not in message
    assert f"{url}/blob.bin" in message
    assert f"{fetch_module.ATTEMPTS} attempts" in message
    assert "connection dropped" in message
    assert len(log) == fetch_module.ATTEMPTS
    assert leftovers(dest) == []


def test_retries_503_then_succeeds(served: Path, dest: Path) -> None:
    log: list[Seen] = []
    with serve_unavailable(served, times=3, log=log) as url:
        fetch(f"{url}/blob.bin", dest, "sha1", SHA1)
    assert dest.read_bytes() == PAYLOAD
    assert [s.status for s in log] == [503, 503, 503, 200]


def test_404_fails_at_once(served: Path, dest: Path) -> None:
    log: list[Seen] = []
    with serve_directory(served, log=log) as url:
        with pytest.raises(SourceError) as err:
            fetch(f"{url}/missing.zip", dest, "sha1", SHA1, section="data")
    assert len(log) == 1
    message = str(err.value)
    assert "HTTP 404" in message and f"{url}/missing.zip" in message
    assert "data.url in params.yaml" in message
    assert leftovers(dest) == []


def test_connection_refused_is_retried_then_reported(dest: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match=f"127.0.0.1:{port}.*gave up after"):
        fetch(f"http://127.0.0.1:{port}/blob.bin", dest, "sha1", SHA1)
    assert leftovers(dest) == []


def test_file_url_and_plain_path_both_work(
    served: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetch((served / "blob.bin").as_uri(), dest, "sha1", SHA1)
    assert dest.read_bytes() == PAYLOAD
    dest.unlink()
    monkeypatch.chdir(served.parent)  # plain paths are relative to the cwd, the repo root
    fetch("www/blob.bin", dest, "sha1", SHA1)
    assert dest.read_bytes() == PAYLOAD
    dest.unlink()
    monkeypatch.setenv("HOME", str(served.parent))  # ~ as a shell reads it, as for a folder of photos
    fetch("~/www/blob.bin", dest, "sha1", SHA1)
    assert dest.read_bytes() == PAYLOAD


def test_a_local_copy_is_verified_too(served: Path, dest: Path) -> None:
    with pytest.raises(DigestMismatch):
        fetch(str(served / "blob.bin"), dest, "sha1", "f" * 40)
    assert leftovers(dest) == []


def test_a_missing_local_file_is_a_clear_error(tmp_path: Path, dest: Path) -> None:
    with pytest.raises(SourceError) as err:
        fetch(str(tmp_path / "nope.zip"), dest, "sha1", SHA1, section="data")
    assert "nope.zip: local file not found" in str(err.value)
    assert "data.url" in str(err.value)
    assert leftovers(dest) == []


def test_an_unsupported_scheme_is_refused(dest: Path) -> None:
    with pytest.raises(SourceError, match="unsupported URL scheme 'ftp'"):
        fetch("ftp://example.invalid/x.zip", dest, "sha1", SHA1)


def test_a_failing_check_leaves_nothing(served: Path, dest: Path) -> None:
    seen: list[bytes] = []

    def refuse(tmp: Path) -> None:
        seen.append(tmp.read_bytes())
        raise StageError("not what we wanted")

    with pytest.raises(StageError, match="not what we wanted"):
        fetch(str(served / "blob.bin"), dest, "sha1", SHA1, check=refuse)
    assert seen == [PAYLOAD]  # the check ran on the verified bytes, before the rename
    assert leftovers(dest) == []


def test_an_existing_output_is_replaced(served: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"old")
    fetch(str(served / "blob.bin"), dest, "sha1", SHA1)
    assert dest.read_bytes() == PAYLOAD


def test_an_html_label_alone_does_not_refuse_the_right_file(served: Path, dest: Path) -> None:
    # Some servers label everything text/html; the digest shows the file is the right one.
    with serve_directory(served, content_type="text/html") as url:
        fetch(f"{url}/blob.bin", dest, "sha1", SHA1, section="data")
    assert dest.read_bytes() == PAYLOAD


def test_an_html_page_is_refused_whatever_its_label(served: Path, dest: Path) -> None:
    (served / "login.zip").write_bytes(b"\xef\xbb\xbf\r\n <HTML><body>Please sign in</body></HTML>")
    with serve_directory(served) as url:
        with pytest.raises(SourceError) as err:
            fetch(f"{url}/login.zip", dest, "sha1", SHA1, section="data")
    assert str(err.value) == (f"{url}/login.zip: the server sent an HTML page, not the file (a login or error "
                              "page?); check data.url in params.yaml")
    assert leftovers(dest) == []


def test_a_saved_html_page_is_refused_as_a_local_file(served: Path, dest: Path) -> None:
    (served / "hotdog.zip").write_bytes(b"<!doctype html><title>Sign in</title>")
    with pytest.raises(SourceError, match=r"hotdog\.zip: the file is an HTML page \(a saved login or error page\?\); "
                                          r"check data\.url in params\.yaml"):
        fetch(str(served / "hotdog.zip"), dest, "sha1", SHA1, section="data")
    assert leftovers(dest) == []
