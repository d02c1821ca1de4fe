"""A static HTTP file server on 127.0.0.1 with byte ranges (what uproot and fsspec read through).

Python's ``http.server`` ignores ``Range`` headers; remote ROOT and Parquet readers request
byte ranges (single ranges, and several in one request), so this handler answers both.
Loaded by a fixture in ``tests/conftest.py`` (tests never import each other).
"""

from __future__ import annotations

import os
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RANGES = re.compile(r"(\d*)-(\d*)")


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files of one directory, honouring ``Range: bytes=a-b[, c-d...]``; counts requests."""

    protocol_version = "HTTP/1.1"
    requests: list[str] = []  # noqa: RUF012 (shared by the server's handler instances on purpose)

    def log_message(self, *args) -> None:  # quiet
        return

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        type(self).requests.append(self.path)
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "not found")
            return
        size = path.stat().st_size
        spec = self.headers.get("Range", "")
        ranges = [self._bounds(m, size) for m in RANGES.finditer(spec.removeprefix("bytes="))] if spec else []
        with path.open("rb") as fin:
            if not ranges:
                self._reply(200, fin.read() if not head else b"", size, {"Accept-Ranges": "bytes"}, head)
            elif len(ranges) == 1:
                start, stop = ranges[0]
                fin.seek(start)
                body = fin.read(stop - start)
                extra = {"Content-Range": f"bytes {start}-{stop - 1}/{size}", "Accept-Ranges": "bytes"}
                self._reply(206, body, len(body), extra, head)
            else:
                self._multipart(fin, ranges, size, head)

    @staticmethod
    def _bounds(match: re.Match, size: int) -> tuple[int, int]:
        first, last = match.groups()
        if not first:  # suffix range: the last N bytes
            return max(size - int(last), 0), size
        return int(first), min(int(last) + 1 if last else size, size)

    def _multipart(self, fin, ranges: list[tuple[int, int]], size: int, head: bool) -> None:
        boundary = "hepsieve-test-boundary"
        parts = []
        for start, stop in ranges:
            fin.seek(start)
            header = (
                f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Range: bytes {start}-{stop - 1}/{size}\r\n\r\n"
            )
            parts.append(header.encode() + fin.read(stop - start) + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        extra = {"Content-Type": f"multipart/byteranges; boundary={boundary}"}
        self._reply(206, body, len(body), extra, head)

    def _reply(self, status: int, body: bytes, length: int, headers: dict, head: bool) -> None:
        self.send_response(status)
        headers.setdefault("Content-Type", "application/octet-stream")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if not head:
            self.wfile.write(body)


class FileServer:
    """A threading HTTP server on 127.0.0.1 (a free port) serving ``root``; use as a context."""

    def __init__(self, root: Path):
        handler = type("Handler", (RangeHandler,), {"requests": []})
        self.handler = handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=os.fspath(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
