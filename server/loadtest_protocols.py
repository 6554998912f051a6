"""What `vfnet loadtest` sends for each --protocol, and how: one image per request.

- detect:  a raw image body to /detect (Locust's HTTP client)
- v2:      an Open Inference Protocol request, the image as binary tensor data, to
           /v2/models/<model>/infer (Locust's HTTP client)
- v2-grpc: a ModelInfer call of KServe v2 over gRPC to --grpc-target (default: --url's host, port
           8001), the image in raw_input_contents, every output asked for, as tritonclient.grpc sends
           it. Calls are blocking grpc calls made cooperative under gevent (grpc's own gevent
           support), so the open and closed loops drive them as they drive HTTP requests.
The model's name (v2, v2-grpc) is read from the service's /v1/model over HTTP (--url).

Over gRPC an answer's status is its status code's name ("OK", "RESOURCE_EXHAUSTED", ...), and a
call counts as answered when the server answered it (its trailing metadata carries our
x-request-id); one refused by gRPC itself or by the network is a transport error named by its code
("UNAVAILABLE"), or "timeout" when the call's own deadline (the run's end plus --drain-timeout) passed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

GRPC_PORT = 8001  # the service's default --grpc-port
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def served_model(url: str, headers: dict) -> str:
    """The served model's name (its preset), from /v1/model (raises OSError when unreachable)."""
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(f"{url}/v1/model", headers=headers), timeout=10) as response:
        return json.loads(response.read())["preset"]


def default_grpc_target(url: str) -> str:
    """--url's host with the service's default gRPC port."""
    host = urlsplit(url).hostname or "127.0.0.1"
    return f"[{host}]:{GRPC_PORT}" if ":" in host else f"{host}:{GRPC_PORT}"


def requests_for(protocol: str, images: list[tuple[bytes, str]], url: str, headers: dict, endpoint: str | None) -> tuple[list[tuple[bytes, dict]], str]:
    """(bodies, each with the headers it needs; the endpoint they go to) for `protocol`. For
    v2-grpc a body is a serialised ModelInferRequest and the endpoint the rpc's path. Raises OSError
    when the model's name is needed and cannot be read."""
    if protocol == "detect":
        return [(data, {"Content-Type": media_type}) for data, media_type in images], endpoint or "/detect"
    if protocol == "v2":
        from vfnet.server.app.open_inference_tensors import binary_request

        return [binary_request([data]) for data, _ in images], endpoint or f"/v2/models/{served_model(url, headers)}/infer"
    from vfnet.server.app.grpc.tensors import infer_request

    model = served_model(url, headers)
    return [(infer_request(model, [data]).SerializeToString(), {}) for data, _ in images], MODEL_INFER


@dataclass(frozen=True)
class Answer:
    """A gRPC call's outcome, shaped as the load generator reads an HTTP response: `status_code` the
    status code's name, or 0 with `error` (a transport error's kind) when the server gave no answer."""

    status_code: str | int
    error: str | None = None


class GrpcSession:
    """Sends serialised ModelInfer requests to `target` over one channel, each call with `timeout_s`
    as its deadline; `post` has the signature of the HTTP session's (path: the rpc)."""

    def __init__(self, target: str, timeout_s: float):
        import locust  # noqa: F401  (gevent's monkey-patching, before grpc's gevent support)
        from grpc.experimental import gevent as grpc_gevent

        grpc_gevent.init_gevent()  # before any grpc object exists
        import grpc

        self.grpc, self.timeout_s = grpc, timeout_s
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
        self.calls = {}  # rpc path -> its callable, sending and receiving raw bytes

    def post(self, path: str, data: bytes, headers: dict, name: str | None = None) -> Answer:
        call = self.calls.setdefault(path, self.channel.unary_unary(path))
        metadata = tuple((key.lower(), value) for key, value in headers.items() if key.lower() != "content-type")
        try:
            call(data, timeout=self.timeout_s, metadata=metadata)
            return Answer("OK")
        except self.grpc.RpcError as exc:
            if any(key == "x-request-id" for key, _ in exc.trailing_metadata() or ()):
                return Answer(exc.code().name)
            return Answer(0, "timeout" if exc.code() is self.grpc.StatusCode.DEADLINE_EXCEEDED else exc.code().name)
