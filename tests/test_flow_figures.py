"""The report's figures in Prefect (issue #21): the link rewriting and the reports server on
their own. tests/test_flow.py runs them end to end under `make ui`, in Chromium."""

from __future__ import annotations

import http.client
import re
import socket
import urllib.request
from pathlib import Path

import pytest

from hotdog.runner.artifacts import figure_key, figure_line, image_titles, served_links
from hotdog.runner.reports_server import REPORTS_URL_ENV, file_url, reports_url, serving_reports

PNG = b"\x89PNG\r\n\x1a\n"
REPORT = """# Report

![training curves](figures/curves.png)

See [the curves](./figures/curves.png), [d2l](https://d2l.ai/x.png) and [the top](#report).

![a mistake](figures/misclassified_finetune.png)
![not a figure](figures/gone.png)
"""


# ---------------------------------------------------------------- the link rewriting


def test_served_links_point_each_figure_at_its_url_and_leave_the_rest():
    urls = {"figures/curves.png": "http://127.0.0.1:4201/figures/curves.png?v=1",
            "figures/misclassified_finetune.png": "http://127.0.0.1:4201/figures/misclassified_finetune.png?v=2"}
    served = served_links(REPORT, urls)
    assert "![training curves](http://127.0.0.1:4201/figures/curves.png?v=1)" in served
    assert "[the curves](http://127.0.0.1:4201/figures/curves.png?v=1)" in served  # ./ is the same file
    assert "![a mistake](http://127.0.0.1:4201/figures/misclassified_finetune.png?v=2)" in served
    # Not a served figure: unchanged, as is everything else in the text.
    assert "[d2l](https://d2l.ai/x.png)" in served and "[the top](#report)" in served
    assert "![not a figure](figures/gone.png)" in served
    assert served.replace("http://127.0.0.1:4201/", "").replace("?v=1", "").replace("?v=2", "") == \
        REPORT.replace("./figures/", "figures/")


def test_without_a_server_the_report_is_published_as_written():
    assert served_links(REPORT, {}) == REPORT


def test_image_titles_are_the_reports_alt_texts():
    assert image_titles(REPORT) == {"figures/curves.png": "training curves",
                                    "figures/misclassified_finetune.png": "a mistake",
                                    "figures/gone.png": "not a figure"}


def test_figure_keys_are_what_prefect_accepts():
    assert figure_key(Path("figures/misclassified_finetune.png")) == "hotdog-figure-misclassified-finetune"
    assert figure_key(Path("Curves 2.png")) == "hotdog-figure-curves-2"
    assert figure_key(Path("__.png")) == "hotdog-figure-unnamed"
    for name in ("a_B.png", "x..y.png", "ünï.png"):
        assert re.fullmatch(r"[a-z0-9-]+", figure_key(Path(name)))


def test_file_urls_name_the_path_under_the_folder_and_the_content(tmp_path):
    folder = tmp_path / "reports"
    (folder / "figures").mkdir(parents=True)
    figure = folder / "figures" / "a b.png"
    figure.write_bytes(PNG + b"one")
    first = file_url("http://127.0.0.1:9/", folder, figure)
    assert re.fullmatch(r"http://127\.0\.0\.1:9/figures/a%20b\.png\?v=[0-9a-f]{12}", first)
    figure.write_bytes(PNG + b"two")
    assert file_url("http://127.0.0.1:9", folder, figure) != first  # a new run's figure is fetched anew
    with pytest.raises(ValueError):
        file_url("http://127.0.0.1:9", folder, tmp_path / "outside.png")


def test_the_figures_list_links_the_file_and_the_served_copy():
    file = Path("/p/reports/figures/curves.png")
    assert figure_line(file, None) == "- [curves.png](file:///p/reports/figures/curves.png)"
    assert figure_line(file, "http://h/figures/curves.png") == \
        "- [curves.png](file:///p/reports/figures/curves.png) ([open](http://h/figures/curves.png))"


def test_reports_url_is_the_environments(monkeypatch):
    monkeypatch.delenv(REPORTS_URL_ENV, raising=False)
    assert reports_url() is None
    monkeypatch.setenv(REPORTS_URL_ENV, "")
    assert reports_url() is None
    monkeypatch.setenv(REPORTS_URL_ENV, "http://127.0.0.1:4201/")
    assert reports_url() == "http://127.0.0.1:4201"


# ---------------------------------------------------------------- the file server


def get(base: str, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    """A request with `path` sent exactly as written (no client-side normalising of `..`)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def test_the_server_serves_reports_and_nothing_outside_it(tmp_path):
    folder = tmp_path / "project" / "reports"
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "curves.png").write_bytes(PNG + b"curves")
    (tmp_path / "project" / "params.yaml").write_text("secret: 1\n")
    (tmp_path / "secret.txt").write_text("secret")
    with serving_reports(folder, port=0) as base:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base)
        assert get(base, "/figures/curves.png") == (200, "image/png", PNG + b"curves")
        assert get(base, "/figures/curves.png?v=0123456789ab")[0] == 200
        for path in ("/../params.yaml", "/figures/../../params.yaml", "/%2e%2e/params.yaml",
                     "/..%2fparams.yaml", "/../../secret.txt", "//etc/passwd", "/" + str(tmp_path / "secret.txt")):
            status, _, body = get(base, path)
            assert status == 404 and b"secret" not in body, path
        assert get(base, "/")[0] == 404  # no listings
        assert get(base, "/figures/")[0] == 404
        assert get(base, "/figures/curves.png", "POST")[0] == 501  # read-only
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/figures/curves.png", timeout=2)  # stopped with the block


def test_the_server_listens_on_loopback_only_and_moves_off_a_taken_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with serving_reports(tmp_path, port=port) as base:
            assert base.startswith("http://127.0.0.1:") and base != f"http://127.0.0.1:{port}"
            assert get(base, "/nothing.png")[0] == 404
