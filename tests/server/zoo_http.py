"""A small real HTTP file server on 127.0.0.1 for the zoo download tests (standard library only).

    with serving({"/zoo/a.pth": data}) as server:      # a ZooServer, on a free port
        server.behaviour["/zoo/a.pth"] = "short"        # or "404", "break_once", "no_length"
        download(server.url + "/zoo/a.pth", ...)
        server.log                                      # [("GET", "/zoo/a.pth", None), ...]

It answers GET from the dict `files` (url path -> bytes) with a correct Content-Length, and a
`Range: bytes=N-` request with 206 and Content-Range (unless `ignore_range`, then 200 and the whole
file). Per-path behaviours: "404" (not found), "short" (the whole file's Content-Length, half the
bytes, then the connection closes), "break_once" ("short" on the first GET, whole afterwards) and
"no_length" (no Content-Length: the body ends when the connection closes, HTTP/1.0 style). Every
request is logged as (method, path, Range header or None) on arrival; `hold.clear()` makes answers
wait (up to a minute) until `hold.set()`. A client that hangs up mid-body is normal.
"""

from __future__ import annotations

import contextlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-$")


class ZooServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler still writing to a client that left never blocks the shutdown

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = dict(files)
        self.behaviour: dict[str, str] = {}
        self.ignore_range = False
        self.log: list[tuple[str, str, str | None]] = []
        self.broken: set[str] = set()  # the "break_once" paths already broken
        self.lock = threading.Lock()
        self.hold = threading.Event()
        self.hold.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def gets(self, path: str) -> list[str | None]:
        """The Range header (or None) of every GET of `path`, in order."""
        with self.lock:
            return [r for method, p, r in self.log if method == "GET" and p == path]


class _Handler(BaseHTTPRequestHandler):
    server: ZooServer
    protocol_version = "HTTP/1.0"  # one request per connection: closing it ends a body

    def log_message(self, format, *args):  # noqa: A002 - keep the test output clean
        pass

    def do_GET(self):
        zoo, path, wanted = self.server, self.path, self.headers.get("Range")
        with zoo.lock:
            zoo.log.append(("GET", path, wanted))
            behaviour = zoo.behaviour.get(path)
            if behaviour == "break_once":
                behaviour = None if path in zoo.broken else "short"
                zoo.broken.add(path)
        zoo.hold.wait(timeout=60)
        data = zoo.files.get(path)
        if data is None or behaviour == "404":
            self.send_error(404, "Not Found")
            return
        start, found = 0, _RANGE.match(wanted or "")
        if found and not zoo.ignore_range:
            start = int(found.group(1))
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if behaviour != "no_length":
            self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        with contextlib.suppress(ConnectionError):  # the client hung up (a refused download, a full disk)
            self.wfile.write(body[: len(body) // 2] if behaviour == "short" else body)
            self.wfile.flush()


@contextlib.contextmanager
def serving(files: dict[str, bytes] | None = None):
    """A running ZooServer for the `with` block; shut down (within seconds) and closed after it."""
    server = ZooServer(files or {})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout=5)
        server.server_close()
        thread.join(timeout=5)
