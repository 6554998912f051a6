"""The Open Inference Protocol (KServe v2) over real HTTP, driven by a client nobody here wrote:
tritonclient.http. The same images through /v2/.../infer (JSON and binary tensors) and /detect give
the same detections; every error comes in the protocol's form with /detect's status; the server
stays ready; /metrics counts the route; concurrent mixed requests of both protocols share the batcher."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from vfnet.train.synth import render_image

from .conftest import Server, encode, in_threads

MODEL = "vfnet_r18_demo"
OUTPUTS = ("boxes", "scores", "class_ids", "num_detections")


@pytest.fixture(scope="module")
def demo():
    """The bundled demo model (real detections to compare); admission by estimated wait is off
    (60 s), so that the concurrent requests below are all served."""
    srv = Server(None, max_batch_size=8, max_queue_wait_ms=60_000).wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def impatient():
    """The demo model with a 100 ms queue-wait limit: a request alone is always admitted; one
    behind a full batch (about 1.6 s of work) is refused 503."""
    srv = Server(None, max_batch_size=8, max_queue_wait_ms=100).wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def strict(tiny_onnx):
    """The tiny model behind a server with an API key, small body and pixel limits and a request
    timeout no request can meet."""
    srv = Server(tiny_onnx, api_key="sesame", max_body_bytes=300_000, max_pixels=200_000, request_timeout_s=0.001).wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def scenes() -> list[bytes]:
    return [encode(render_image(np.random.default_rng([11, i]), 384, 512, min_side=64, max_objects=4)[0], quality=90) for i in range(4)]


def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=120.0)


def images_input(jpegs: list[bytes], binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("images", [len(jpegs)], "BYTES")
    data = jpegs if binary else [base64.b64encode(j) for j in jpegs]  # JSON carries base64 strings
    return tensor.set_data_from_numpy(np.array(data, dtype=object), binary_data=binary)


def infer(server: Server, jpegs: list[bytes], binary: bool = True, **parameters):
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in OUTPUTS]
    result = client(server).infer(MODEL, [images_input(jpegs, binary)], outputs=outputs, parameters=parameters or None)
    return {name: result.as_numpy(name) for name in OUTPUTS}


def detect(server: Server, jpegs: list[bytes], **query) -> list[list[dict]]:
    files = [("image", (f"{i}.jpg", j, "image/jpeg")) for i, j in enumerate(jpegs)]
    response = httpx.post(f"{server.url}/detect", files=files, params=query, timeout=120)
    assert response.status_code == 200, response.text
    return [r["detections"] for r in response.json()["results"]]


def assert_same_as_detect(tensors: dict, detected: list[list[dict]]) -> None:
    """v2 tensors hold /detect's detections (which round boxes to 0.01 px and scores to 1e-5)."""
    k = max(len(d) for d in detected)
    assert tensors["boxes"].shape == (len(detected), k, 4) and tensors["boxes"].dtype == np.float32
    assert tensors["class_ids"].dtype == np.int32 and tensors["num_detections"].dtype == np.int32
    assert tensors["num_detections"].tolist() == [len(d) for d in detected]
    for i, dets in enumerate(detected):
        n = len(dets)
        assert tensors["class_ids"][i, :n].tolist() == [d["class_id"] for d in dets]
        np.testing.assert_allclose(tensors["boxes"][i, :n], np.array([d["box"] for d in dets]).reshape(n, 4), atol=0.006)
        np.testing.assert_allclose(tensors["scores"][i, :n], [d["score"] for d in dets], atol=6e-6)
        assert (tensors["class_ids"][i, n:] == -1).all() and (tensors["scores"][i, n:] == 0).all() and (tensors["boxes"][i, n:] == 0).all()


def test_health_and_metadata_name_the_model_its_tensors_and_classes(demo):
    c = client(demo)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready(MODEL) and c.is_model_ready(MODEL, "1")
    assert c.get_server_metadata() == {"name": "vfnet-serve", "version": "0.1.0", "extensions": ["binary_tensor_data", "model_configuration"]}
    metadata = c.get_model_metadata(MODEL)
    v1 = httpx.get(f"{demo.url}/v1/model").json()
    assert metadata["name"] == v1["preset"] == MODEL and metadata["versions"] == ["1"] and metadata["platform"] == "onnxruntime"
    assert metadata["inputs"] == [{"name": "images", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [
        {"name": "boxes", "datatype": "FP32", "shape": [-1, -1, 4]},
        {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
        {"name": "class_ids", "datatype": "INT32", "shape": [-1, -1]},
        {"name": "num_detections", "datatype": "INT32", "shape": [-1]},
    ]
    assert metadata["class_names"] == v1["class_names"]
    assert c.get_model_metadata(MODEL, "1") == metadata


def test_the_model_configuration_is_tritons_as_its_clients_read_it(demo):
    """GET /v2/models/{name}/config: Triton's ModelConfig in JSON, with max_batch_size 0 (a request's
    [N] images are its batch; a positive one would make Triton's clients strip `images`' only dim)."""
    config = client(demo).get_model_config(MODEL)
    assert config["name"] == MODEL and config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 0
    assert config["input"] == [{"name": "images", "data_type": "TYPE_STRING", "format": "FORMAT_NONE", "dims": [-1]}]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("boxes", "TYPE_FP32", [-1, -1, 4]),
        ("scores", "TYPE_FP32", [-1, -1]),
        ("class_ids", "TYPE_INT32", [-1, -1]),
        ("num_detections", "TYPE_INT32", [-1]),
    ]
    batching = config["dynamic_batching"]  # the server's batcher: Server(max_batch_size=8), the default delay and queue
    assert batching == {"preferred_batch_size": [8], "max_queue_delay_microseconds": 0, "default_queue_policy": {"max_queue_size": 64}}
    assert client(demo).get_model_config(MODEL, "1") == config
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    parsed = json_format.ParseDict(config, model_config_pb2.ModelConfig())  # every field is one of Triton's, of its type
    assert parsed.max_batch_size == 0 and parsed.input[0].data_type == model_config_pb2.TYPE_STRING and list(parsed.output[0].dims) == [-1, -1, 4]
    for path in ("/v2/models/other/config", f"/v2/models/{MODEL}/versions/2/config"):
        reply = httpx.get(demo.url + path)
        assert reply.status_code == 404 and reply.json()["error"].startswith(("unknown model 'other'", f"model {MODEL!r} has no version '2'"))


def test_binary_and_json_tensors_give_detects_detections(demo, scenes):
    binary = infer(demo, scenes[:3])
    assert_same_as_detect(binary, detect(demo, scenes[:3]))
    assert binary["num_detections"].min() >= 1  # the demo finds its scenes' objects
    as_json = infer(demo, scenes[:3], binary=False)
    for name in OUTPUTS:
        np.testing.assert_array_equal(as_json[name], binary[name])


def test_the_filters_are_detects(demo, scenes):
    filters = {"score_threshold": 0.5, "max_detections": 2, "classes": "circle,star,arrow", "iou_threshold": 0.5}
    tensors = infer(demo, scenes, **filters)
    assert_same_as_detect(tensors, detect(demo, scenes, **filters))
    assert tensors["num_detections"].max() <= 2 and (tensors["scores"][tensors["class_ids"] >= 0] > 0.5).all()


def test_a_version_path_a_subset_of_outputs_and_the_request_id(demo, scenes):
    header = json.dumps({
        "id": "req-7",
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(scenes[0]).decode()]}],
        "outputs": [{"name": "num_detections"}, {"name": "scores", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    response = httpx.post(f"{demo.url}/v2/models/{MODEL}/versions/1/infer", content=header, timeout=60)
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    body = json.loads(response.content[:length])
    assert body["id"] == "req-7" and body["model_name"] == MODEL and body["model_version"] == "1"
    assert [o["name"] for o in body["outputs"]] == ["num_detections", "scores"]
    count = body["outputs"][0]["data"][0]
    scores = np.frombuffer(response.content[length:], "<f4")
    assert body["outputs"][1]["parameters"]["binary_data_size"] == scores.nbytes and body["outputs"][1]["shape"] == [1, count]
    np.testing.assert_allclose(scores, [d["score"] for d in detect(demo, scenes[:1])[0]], atol=6e-6)


def v2_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    message = response.json()["error"]
    assert all(word in message for word in words), message


def post_infer(server: Server, document: dict | bytes, headers: dict | None = None, model: str = MODEL) -> httpx.Response:
    content = document if isinstance(document, bytes) else json.dumps(document).encode()
    return httpx.post(f"{server.url}/v2/models/{model}/infer", content=content, headers=headers or {}, timeout=60)


def images_document(*elements: str, shape: list | None = None, datatype: str = "BYTES", name: str = "images", **request) -> dict:
    tensor = {"name": name, "datatype": datatype, "shape": shape if shape is not None else [len(elements)], "data": list(elements)}
    return {"inputs": [tensor], **request}


def test_every_client_error_is_the_protocols_with_detects_status(demo, scenes):
    good = base64.b64encode(scenes[0]).decode()
    v2_error(post_infer(demo, images_document(base64.b64encode(b"not an image").decode())), 400, "cannot identify the image format")
    v2_error(post_infer(demo, images_document("%%%")), 400, "not base64")
    v2_error(post_infer(demo, b"{not json"), 400, "does not parse")
    v2_error(post_infer(demo, b'{"inputs": []}', headers={"Inference-Header-Content-Length": "999"}), 400, "Inference-Header-Content-Length")
    v2_error(post_infer(demo, images_document(*[good] * 9)), 413, "9 images", "limit is 8")
    v2_error(post_infer(demo, images_document(good, datatype="FP32")), 422, "BYTES")
    v2_error(post_infer(demo, images_document(good, name="input0")), 422, "'input0'", "images")
    v2_error(post_infer(demo, images_document(good, shape=[2])), 422, "holds 1 images", "says 2")
    v2_error(post_infer(demo, images_document(good, outputs=[{"name": "logits"}])), 422, "unknown output 'logits'")
    v2_error(post_infer(demo, images_document(good, parameters={"score_treshold": 0.4})), 422, "unknown parameters score_treshold")
    v2_error(post_infer(demo, images_document(good, parameters={"score_threshold": 2.0})), 422, "score_threshold")
    v2_error(post_infer(demo, images_document(good, parameters={"classes": "unicorn"})), 422, "unicorn")
    v2_error(post_infer(demo, images_document(good), headers={"Content-Encoding": "gzip"}), 415, "Content-Encoding")
    v2_error(post_infer(demo, images_document(good), model="yolo"), 404, "unknown model 'yolo'", MODEL)
    v2_error(httpx.post(f"{demo.url}/v2/models/{MODEL}/versions/2/infer", content=json.dumps(images_document(good))), 404, "no version '2'")
    v2_error(httpx.get(f"{demo.url}/v2/models/yolo"), 404, "unknown model")
    v2_error(httpx.get(f"{demo.url}/v2/models/{MODEL}/versions/3/ready"), 404, "no version '3'")
    with pytest.raises(InferenceServerException) as error:  # the client surfaces our message and status
        client(demo).infer(MODEL, [images_input([scenes[0]])], parameters={"max_detections": -1})
    assert error.value.status() == "422" and "max_detections" in error.value.message()
    assert client(demo).is_server_ready() and client(demo).is_model_ready(MODEL)  # none of it hurt the server


def test_a_compressed_request_from_tritonclient_is_refused_clearly(demo, scenes):
    with pytest.raises(InferenceServerException) as error:
        client(demo).infer(MODEL, [images_input(scenes[:1])], request_compression_algorithm="gzip")
    assert error.value.status() == "415" and "uncompressed" in error.value.message()


def test_busy_is_503_with_retry_after_while_a_full_batch_is_ahead(impatient, scenes):
    """A request behind 8 queued or running images (about 1.6 s of work) exceeds the 100 ms limit.
    Probes follow the 8-image request once it is being handled (and had 0.5 s to be admitted),
    until one is refused or that request is done (bounded: 40 probes)."""
    first: dict = {}
    sender = threading.Thread(target=lambda: first.update(infer(impatient, [scenes[i % 4] for i in range(8)])))
    sender.start()
    refused = None
    try:
        for _ in range(500):  # until the 8-image request is being handled (bounded: about 5 s)
            if "vfnet_in_flight_requests 2.0" in httpx.get(f"{impatient.url}/metrics").text:
                break
            time.sleep(0.01)
        time.sleep(0.5)
        for _ in range(40):
            response = post_infer(impatient, images_document(base64.b64encode(scenes[0]).decode()))
            if response.status_code == 503 or not sender.is_alive():
                refused = response
                break
    finally:
        sender.join(timeout=120)
    v2_error(refused, 503, "server busy", "estimated wait")
    assert int(refused.headers["Retry-After"]) >= 1
    assert first["num_detections"].shape == (8,)  # the admitted request was served


def test_api_key_body_pixel_and_time_limits(strict, photo_like_images):
    small = encode(photo_like_images[0])  # 320 x 240 = 76,800 pixels
    key = {"X-API-Key": "sesame"}
    document = images_document(base64.b64encode(small).decode())
    v2_error(post_infer(strict, document), 401, "X-API-Key")
    v2_error(httpx.get(f"{strict.url}/v2/models/vfnet_r50_fpn"), 401, "X-API-Key")
    assert httpx.get(f"{strict.url}/v2/health/ready").status_code == 200  # health needs no key
    noise = encode(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8), "PNG")  # ~480 kB, 160,000 pixels
    v2_error(post_infer(strict, images_document(base64.b64encode(noise).decode()), headers=key), 413, "limit is 300,000")
    big = encode(np.zeros((500, 500, 3), np.uint8), "PNG")  # 250,000 pixels
    v2_error(post_infer(strict, images_document(base64.b64encode(big).decode()), headers=key), 413, "250,000 pixels", "200,000")
    preset = httpx.get(f"{strict.url}/v1/model", headers=key).json()["preset"]
    v2_error(post_infer(strict, document, headers=key, model=preset), 504, "timed out")
    assert httpx.get(f"{strict.url}/v2/health/ready").status_code == 200


def test_concurrent_mixed_protocols_share_the_batcher_and_each_gets_its_own_answer(demo, scenes):
    expected = {i: detect(demo, [scenes[i]])[0] for i in range(4)}

    def work(index: int) -> tuple[int, object]:
        scene = index % 4
        if index % 3 == 0:
            return scene, detect(demo, [scenes[scene]])[0]
        return scene, infer(demo, [scenes[scene]], binary=index % 3 == 1)

    answers = in_threads(work, 6)  # 6 images: never a full batch ahead
    assert not [a for a in answers if isinstance(a, Exception)], answers
    for scene, answer in answers:
        if isinstance(answer, list):
            assert answer == expected[scene]
        else:
            assert_same_as_detect(answer, [expected[scene]])


def test_metrics_count_the_v2_routes_by_template(demo, scenes):
    infer(demo, scenes[:1])
    post_infer(demo, images_document(base64.b64encode(scenes[0]).decode(), parameters={"classes": 7}))
    metrics = httpx.get(f"{demo.url}/metrics").text
    line = next(l for l in metrics.splitlines() if l.startswith('vfnet_requests_total{route="/v2/models/{name}/infer",status="200"}'))
    assert float(line.split()[-1]) >= 1
    assert 'vfnet_requests_total{route="/v2/models/{name}/infer",status="422"}' in metrics


def test_loadtest_drives_the_v2_route(demo, tmp_path):
    import subprocess
    import sys

    def served() -> float:
        metrics = httpx.get(f"{demo.url}/metrics").text
        line = next((l for l in metrics.splitlines() if l.startswith('vfnet_requests_total{route="/v2/models/{name}/infer",status="200"}')), "x 0")
        return float(line.split()[-1])

    before = served()
    out = tmp_path / "load.json"
    done = subprocess.run(
        [sys.executable, "-m", "vfnet.server.cli", "loadtest", "--url", demo.url, "--protocol", "v2", "--concurrency", "2",
         "--duration", "3", "--warmup", "0.5", "--out", str(out), "--max-error-rate", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["protocol"] == "v2" and report["endpoint"] == f"/v2/models/{MODEL}/infer"
    assert report["sent"] > 0 and report["status_codes"] == {"200": report["sent"]}
    assert served() - before >= report["sent"]  # warm-up requests come on top
