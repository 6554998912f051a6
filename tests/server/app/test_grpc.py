"""KServe v2 over gRPC against real `vfnet serve` processes, driven by clients nobody here wrote:
tritonclient.grpc, its generated stubs for what tritonclient does not send (bytes_contents, malformed
requests, trailing metadata) and grpc.health.v1's. The same images give /detect's detections; every
error is the gRPC status code of /detect's status; a call whose deadline passes in the queue leaves
it; SIGTERM drains. This process never imports vfnet's own generated modules (they define the same
protobuf symbols as tritonclient's)."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from . import test_open_inference as http_v2
from .conftest import Server, encode, free_port, in_threads

MODEL, OUTPUTS = http_v2.MODEL, http_v2.OUTPUTS
NUMPY = {"FP32": np.float32, "INT32": np.int32}
scenes = http_v2.scenes  # the same four 384 x 512 scenes


def start(**settings) -> Server:
    port = free_port()
    srv = Server(None, grpc_port=port, **settings)
    srv.target = f"127.0.0.1:{port}"
    return srv


@pytest.fixture(scope="module")
def served():
    """The demo model, admission by estimated wait off (60 s). gRPC listens before the warm-up of
    batch sizes 1..8 (seconds) is done: what a client sees then is kept in `early`."""
    srv = start(max_batch_size=8, max_queue_wait_ms=60_000)
    client = triton.InferenceServerClient(srv.target)
    for _ in range(600):  # until gRPC answers (the model is loaded before the ports are bound)
        try:
            client.is_server_live()
            break
        except InferenceServerException:
            time.sleep(0.05)
    srv.early = {"ready": client.is_server_ready(), "model_ready": client.is_model_ready(MODEL), "health": health(srv, "")}
    srv.early["infer"] = error_of(lambda: client.infer(MODEL, [images_input([b"x"])]))
    yield srv.wait_ready()
    srv.stop()


@pytest.fixture(scope="module")
def strict():
    """An API key; one image a batch; a request timeout no request meets; 5 MP a image and in the
    pixel budget, whose wait (as the queue's) is 1 ms; 1 MB a message."""
    settings = {"pixel_budget": 5_000_000, "max_queue_wait_ms": 1, "max_body_bytes": 1_000_000}
    srv = start(api_key="sesame", max_batch_size=1, request_timeout_s=0.001, max_pixels=5_000_000, **settings).wait_ready()
    yield srv
    srv.stop()


def images_input(jpegs: list[bytes]) -> triton.InferInput:
    return triton.InferInput("images", [len(jpegs)], "BYTES").set_data_from_numpy(np.array(jpegs, dtype=object))


def infer(server: Server, jpegs: list[bytes], **parameters) -> dict:
    result = triton.InferenceServerClient(server.target).infer(MODEL, [images_input(jpegs)], parameters=parameters or None)
    return {name: result.as_numpy(name) for name in OUTPUTS}


def error_of(call) -> tuple[str, str]:
    """(status code name, message) of a tritonclient call that must fail."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status().removeprefix("StatusCode."), caught.value.message()


def stub(server: Server) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))


def request(jpegs: list[bytes], contents: bool = False, **fields) -> service_pb2.ModelInferRequest:
    """A ModelInfer request: the images in raw_input_contents (or in contents.bytes_contents)."""
    message = service_pb2.ModelInferRequest(model_name=MODEL, **fields)
    tensor = message.inputs.add(name="images", datatype="BYTES", shape=[len(jpegs)])
    if contents:
        tensor.contents.bytes_contents.extend(jpegs)
    else:
        message.raw_input_contents.append(b"".join(len(j).to_bytes(4, "little") + j for j in jpegs))
    return message


def tensors_of(response: service_pb2.ModelInferResponse) -> dict:
    return {o.name: np.frombuffer(raw, NUMPY[o.datatype]).reshape(o.shape) for o, raw in zip(response.outputs, response.raw_output_contents)}


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


def health(server: Server, service: str) -> int:
    channel = grpc.insecure_channel(server.target)
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def metric(server: Server, name: str, **labels) -> float:
    families = text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
    return sum(s.value for f in families for s in f.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_before_ready_the_server_is_live_not_ready_and_inference_unavailable(served):
    code, message = served.early.pop("infer")
    assert served.early == {"ready": False, "model_ready": False, "health": health_pb2.HealthCheckResponse.NOT_SERVING}
    assert code == "UNAVAILABLE" and message.startswith("not ready: ")
    assert health(served, "") == health(served, "inference.GRPCInferenceService") == health_pb2.HealthCheckResponse.SERVING
    assert (
        rpc_error(health_pb2_grpc.HealthStub(grpc.insecure_channel(served.target)).Check, health_pb2.HealthCheckRequest(service="x")).code()
        is grpc.StatusCode.NOT_FOUND
    )


def test_metadata_and_configuration_are_the_http_ones(served):
    client = triton.InferenceServerClient(served.target)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    server = client.get_server_metadata()
    assert (server.name, server.version, list(server.extensions)) == ("vfnet-serve", "0.1.0", ["model_configuration"])
    metadata = client.get_model_metadata(MODEL, as_json=True)
    v2 = httpx.get(f"{served.url}/v2/models/{MODEL}").json()
    assert {k: metadata[k] for k in ("name", "versions", "platform")} == {k: v2[k] for k in ("name", "versions", "platform")}
    for side in ("inputs", "outputs"):
        assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in metadata[side]] == [(t["name"], t["datatype"], t["shape"]) for t in v2[side]]
    http_config = httpx.get(f"{served.url}/v2/models/{MODEL}/config").json()
    from google.protobuf import json_format

    assert client.get_model_config(MODEL).config == json_format.ParseDict(http_config, model_config_pb2.ModelConfig())
    assert client.get_model_config(MODEL, "1").config.dynamic_batching.preferred_batch_size == [8]
    assert error_of(lambda: client.get_model_metadata("other")) == ("NOT_FOUND", "unknown model 'other'; this server serves 'vfnet_r18_demo'")
    assert error_of(lambda: client.get_model_config(MODEL, "2"))[0] == "NOT_FOUND"
    assert error_of(lambda: client.is_model_ready(MODEL, "2"))[0] == "NOT_FOUND"
    assert error_of(lambda: client.get_inference_statistics(MODEL))[0] == "UNIMPLEMENTED"


def test_raw_and_bytes_contents_give_detects_detections(served, scenes):
    expected = http_v2.detect(served, scenes[:3])
    http_v2.assert_same_as_detect(infer(served, scenes[:3]), expected)
    response = stub(served).ModelInfer(request(scenes[:3], contents=True), timeout=120)
    http_v2.assert_same_as_detect(tensors_of(response), expected)
    subset = request(scenes[:1], id="req-7", outputs=[service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in ("scores", "num_detections")])
    response = stub(served).ModelInfer(subset, timeout=120)
    assert (response.model_name, response.model_version, response.id) == (MODEL, "1", "req-7")
    assert [o.name for o in response.outputs] == ["scores", "num_detections"] and len(response.raw_output_contents) == 2
    assert tensors_of(response)["num_detections"].tolist() == [len(expected[0])]


def test_the_filters_are_detects(served, scenes):
    names = httpx.get(f"{served.url}/v1/model").json()["class_names"]
    query = {"score_threshold": 0.4, "max_detections": 3, "classes": ",".join(names[:3])}
    expected = http_v2.detect(served, scenes[:2], **query)
    http_v2.assert_same_as_detect(infer(served, scenes[:2], **query), expected)
    message = request(scenes[:2])
    message.parameters["score_threshold"].double_param, message.parameters["max_detections"].int64_param = 0.4, 3
    message.parameters["classes"].string_param = query["classes"]
    http_v2.assert_same_as_detect(tensors_of(stub(served).ModelInfer(message, timeout=120)), expected)
    # Triton's reserved parameters, as perf_analyzer sends them over gRPC, change nothing
    message.parameters["triton_enable_empty_final_response"].bool_param, message.parameters["priority"].uint64_param = False, 1
    http_v2.assert_same_as_detect(tensors_of(stub(served).ModelInfer(message, timeout=120)), expected)


def test_every_client_error_is_invalid_argument_with_the_http_words(served, scenes):
    client = triton.InferenceServerClient(served.target)
    assert error_of(lambda: infer(served, scenes[:1], colour="red"))[1].startswith("bad inference request: unknown parameters colour")
    assert error_of(lambda: infer(served, scenes[:1], score_threshold=1.5)) == (
        "INVALID_ARGUMENT",
        "bad parameters: score_threshold must be between 0 and 1, got 1.5",
    )
    assert "9 images in one request; the limit is 8" in error_of(lambda: infer(served, scenes * 2 + scenes[:1]))[1]
    assert error_of(lambda: infer(served, [b"not an image"]))[0] == "INVALID_ARGUMENT"
    wrong = triton.InferInput("pixels", [1], "BYTES").set_data_from_numpy(np.array([scenes[0]], dtype=object))
    assert "this model takes one input, 'images'" in error_of(lambda: client.infer(MODEL, [wrong]))[1]
    cases = {
        "must be BYTES": request(scenes[:1]),
        "holds 1 images, its shape says 2": request(scenes[:1]),
        "both contents and raw_input_contents": request(scenes[:1]),
        "has no elements": service_pb2.ModelInferRequest(model_name=MODEL),
        "unknown output 'masks'": request(scenes[:1], outputs=[service_pb2.ModelInferRequest.InferRequestedOutputTensor(name="masks")]),
        "ends inside an element's 4-byte length": request(scenes[:1]),
    }
    cases["must be BYTES"].inputs[0].datatype = "FP32"
    cases["holds 1 images, its shape says 2"].inputs[0].shape[0] = 2
    cases["both contents and raw_input_contents"].inputs[0].contents.bytes_contents.append(scenes[0])
    cases["has no elements"].inputs.add(name="images", datatype="BYTES", shape=[1])
    cases["ends inside an element's 4-byte length"].raw_input_contents[0] += b"\x01"
    for words, message in cases.items():
        error = rpc_error(stub(served).ModelInfer, message, timeout=60)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and words in error.details(), (words, error.details())
    assert client.is_server_ready()


def test_a_call_whose_deadline_passes_in_the_queue_leaves_it(served, scenes):
    """Two 8-image requests (two full batches, about a second or more each here) are ahead; a
    one-image call with a 0.2 s deadline waits behind them: its client gets DEADLINE_EXCEEDED, and
    its image is never computed (the images counter grows by the 16 ahead only)."""
    images, expired = metric(served, "vfnet_images_total"), metric(served, "vfnet_grpc_requests_total", method="ModelInfer", code="DEADLINE_EXCEEDED")
    ahead = [threading.Thread(target=http_v2.detect, args=(served, [scenes[i % 4] for i in range(8)])) for _ in range(2)]
    for thread in ahead:
        thread.start()
    time.sleep(0.2)  # the first batch is running: the call below waits behind at least its 8 images
    error = rpc_error(stub(served).ModelInfer, request(scenes[:1]), timeout=0.2)
    for thread in ahead:
        thread.join(timeout=120)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert metric(served, "vfnet_images_total") - images == 16 and metric(served, "vfnet_queue_depth") == 0
    assert metric(served, "vfnet_grpc_requests_total", method="ModelInfer", code="DEADLINE_EXCEEDED") - expired == 1


def test_concurrent_http_and_grpc_requests_each_get_their_own_answer(served, scenes):
    expected = {i: http_v2.detect(served, [scenes[i]])[0] for i in range(4)}

    def work(index: int) -> tuple[int, object]:
        scene = index % 4
        if index % 3 == 0:
            return scene, http_v2.detect(served, [scenes[scene]])[0]
        if index % 3 == 1:
            return scene, infer(served, [scenes[scene]])
        return scene, tensors_of(stub(served).ModelInfer(request([scenes[scene]], contents=True), timeout=120))

    answers = in_threads(work, 6)
    assert not [a for a in answers if isinstance(a, Exception)], answers
    for scene, answer in answers:
        if isinstance(answer, list):
            assert answer == expected[scene]
        else:
            http_v2.assert_same_as_detect(answer, [expected[scene]])


def test_metrics_count_grpc_calls_by_method_and_code(served):
    client = triton.InferenceServerClient(served.target)
    before = {code: metric(served, "vfnet_grpc_requests_total", method="ModelMetadata", code=code) for code in ("OK", "NOT_FOUND")}
    client.get_model_metadata(MODEL)
    client.get_model_metadata(MODEL)
    error_of(lambda: client.get_model_metadata("other"))
    after = {code: metric(served, "vfnet_grpc_requests_total", method="ModelMetadata", code=code) for code in ("OK", "NOT_FOUND")}
    assert {code: after[code] - before[code] for code in after} == {"OK": 2, "NOT_FOUND": 1}
    assert metric(served, "vfnet_request_duration_seconds_count", route="/inference.GRPCInferenceService/ModelMetadata") >= 3


def test_loadtest_drives_model_infer(served, tmp_path):
    import json
    import subprocess
    import sys

    before = metric(served, "vfnet_grpc_requests_total", method="ModelInfer", code="OK")
    out = tmp_path / "load.json"
    done = subprocess.run(
        [sys.executable, "-m", "vfnet.server.cli", "loadtest", "--url", served.url, "--protocol", "v2-grpc", "--grpc-target", served.target,
         "--concurrency", "2", "--duration", "3", "--warmup", "0.5", "--out", str(out), "--max-error-rate", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert (report["protocol"], report["endpoint"], report["grpc_target"]) == ("v2-grpc", "/inference.GRPCInferenceService/ModelInfer", served.target)
    assert report["sent"] > 0 and report["status_codes"] == {"OK": report["sent"]} and report["latency_ms"]["p50"] > 0
    assert metric(served, "vfnet_grpc_requests_total", method="ModelInfer", code="OK") - before >= report["sent"]  # warm-up calls on top


def test_api_key_pixel_size_time_and_busy_limits(strict):
    """In this order: a refused request leaves nothing behind; an admitted one leaves its batch
    running after its 504, and requests arriving meanwhile are refused as busy (by estimated wait)."""
    key, small = (("x-api-key", "sesame"),), encode(np.zeros((240, 320, 3), np.uint8))
    for metadata in ((), (("x-api-key", "wrong"),)):
        error = rpc_error(stub(strict).ModelInfer, request([small]), metadata=metadata, timeout=60)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED and "X-API-Key" in error.details()
    assert stub(strict).ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready  # health needs no key
    ramp = np.broadcast_to(np.linspace(0, 255, 2000, dtype=np.uint8)[None, :, None], (3000, 2000, 3))
    error = rpc_error(stub(strict).ModelInfer, request([encode(ramp)]), metadata=key, timeout=60)  # 6,000,000 pixels
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and "5,000,000" in error.details()
    error = rpc_error(stub(strict).ModelInfer, request([np.random.default_rng(0).bytes(1_200_000)]), metadata=key, timeout=60)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in error.details()  # gRPC's own cap
    assert "retry-after" not in dict(error.trailing_metadata() or ())
    error = rpc_error(stub(strict).ModelInfer, request([small]), metadata=key, timeout=60)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED and "timed out" in error.details()
    four_mp = encode(np.ascontiguousarray(ramp[:2000]))  # each fills 4/5 of the pixel budget while it decodes
    calls = [stub(strict).ModelInfer.future(request([four_mp]), metadata=key, timeout=60) for _ in range(6)]
    errors = [call.exception() for call in calls]
    busy = [e for e in errors if e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert busy and {e.code() for e in errors} <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert all(e.details().startswith("server busy") and int(dict(e.trailing_metadata())["retry-after"]) >= 1 for e in busy)


def test_sigterm_lets_the_call_in_flight_finish_and_refuses_new_ones(served, scenes):
    """The last test of the module: it stops the server."""
    answer: dict = {}
    sender = threading.Thread(target=lambda: answer.update(infer(served, [scenes[i % 4] for i in range(8)])))
    sender.start()
    for _ in range(500):  # until the call is being handled (bounded: about 5 s); /metrics is the other one
        if metric(served, "vfnet_in_flight_requests") >= 2:
            break
        time.sleep(0.01)
    served.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert error_of(lambda: triton.InferenceServerClient(served.target).is_server_live())[0] == "UNAVAILABLE"
    sender.join(timeout=120)
    assert answer["num_detections"].shape == (8,)
    assert served.stop() == 0 and "gRPC: draining" in served.log()
