"""The Open Inference Protocol (KServe v2, REST) tensors of our detector: an inference request's
body read into encoded images and DetectOptions, and detections written as output tensors. HTTP
is routes/open_inference.py's; here are bytes and dictionaries only.

Input `images`, datatype BYTES, shape [N]: N encoded images (JPEG, PNG, ...), two ways:
- JSON: `"data": [...]`, each element the base64 of an image (a JSON string cannot hold raw bytes);
- Triton's binary tensor data extension: the body is the JSON header (its length in the
  `Inference-Header-Content-Length` header), then the tensors' bytes; the input says
  `"parameters": {"binary_data_size": S}`, and its S bytes hold each image as a 4-byte
  little-endian length followed by its bytes (Triton's BYTES serialisation, as tritonclient sends).

Outputs, K being the largest detection count in the response (rows past an image's
num_detections are padding: boxes and scores 0, class_ids -1):
    boxes           FP32  [N, K, 4]  xyxy in original-image pixels
    scores          FP32  [N, K]     IACS, best first
    class_ids       INT32 [N, K]
    num_detections  INT32 [N]
Each comes back as JSON `data` (flattened, row-major) or, when asked with `"parameters":
{"binary_data": true}` on the output (or `binary_data_output` on the request), as raw
little-endian bytes after the JSON header.

Request parameters: score_threshold, iou_threshold, max_detections, classes (comma-separated class
names, or a list of them); Triton's reserved ones (priority, timeout, sequence_*, headers, and any
name starting with `triton_`, e.g. perf_analyzer's triton_enable_empty_final_response over gRPC) are
accepted and have no effect. Any other parameter is refused (422), as a misspelt option should be.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

import numpy as np

from vfnet.server.runtime import DetectionResult

from .errors import RequestFailed
from .service import DetectOptions

INPUT = "images"
OUTPUTS = {"boxes": "FP32", "scores": "FP32", "class_ids": "INT32", "num_detections": "INT32"}
OUTPUT_SHAPES = {"boxes": [-1, -1, 4], "scores": [-1, -1], "class_ids": [-1, -1], "num_detections": [-1]}
NUMPY = {"FP32": np.dtype("<f4"), "INT32": np.dtype("<i4")}
OPTIONS = ("score_threshold", "iou_threshold", "max_detections", "classes")
NO_EFFECT = ("priority", "timeout", "sequence_id", "sequence_start", "sequence_end", "headers")  # Triton's reserved
RESERVED_PREFIX = "triton_"  # Triton reserves every parameter name with it
HEADER_LENGTH = "Inference-Header-Content-Length"
VERSION = "1"  # every served model has this one version
TRITON_TYPES = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32", "INT32": "TYPE_INT32"}  # protocol datatype -> ModelConfig's
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino", "tensorrt": "tensorrt_plan", "torch": "pytorch_libtorch"}


@dataclass(frozen=True)
class InferRequest:
    """What an inference request asks: its id (echoed back), the encoded images, the filters, and
    each output to return with whether it goes as binary data."""

    id: str | None
    images: list[bytes]
    options: DetectOptions
    outputs: dict[str, bool]


def bad_request(message: str) -> RequestFailed:
    return RequestFailed(400, f"malformed inference request: {message}")


def unprocessable(message: str) -> RequestFailed:
    return RequestFailed(422, f"bad inference request: {message}")


def read_request(body: bytes, header_length: str | None, max_images: int) -> InferRequest:
    """Parse an inference request body (`header_length`: the Inference-Header-Content-Length
    header, None without binary data). RequestFailed: 400 for a body that is not the protocol's,
    413 for more than `max_images` images, 422 for tensors or parameters this model does not take."""
    header, binary = _split(body, header_length)
    try:
        request = json.loads(header)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request(f"the JSON header does not parse ({exc})") from None
    if not isinstance(request, dict):
        raise bad_request("the JSON header is not an object")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise unprocessable("id must be a string")
    images = input_images(request.get("inputs"), binary, max_images)
    parameters = request.get("parameters", {})
    if not isinstance(parameters, dict):
        raise unprocessable("parameters must be an object")
    return InferRequest(request_id, images, detect_options(parameters), requested_outputs(request.get("outputs"), parameters))


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tensor data) of a body."""
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or not 0 < int(header_length) <= len(body):
        raise bad_request(f"{HEADER_LENGTH} {header_length!r} is not a length within the body's {len(body)} bytes")
    return body[: int(header_length)], body[int(header_length) :]


def input_images(inputs, binary: bytes, max_images: int) -> list[bytes]:
    if not isinstance(inputs, list) or not inputs:
        raise unprocessable(f"inputs must be a list holding the one input {INPUT!r}")
    names = [tensor.get("name") if isinstance(tensor, dict) else None for tensor in inputs]
    if names != [INPUT]:
        raise unprocessable(f"inputs {names}: this model takes one input, {INPUT!r} (BYTES [N], encoded images)")
    tensor = inputs[0]
    if tensor.get("datatype") != "BYTES":
        raise unprocessable(f"input {INPUT!r} has datatype {tensor.get('datatype')!r}; it must be BYTES (encoded images)")
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and not isinstance(shape[0], bool) and shape[0] >= 1):
        raise unprocessable(f"input {INPUT!r} has shape {shape!r}; it must be [N] with N >= 1 images")
    count = shape[0]
    if count > max_images:
        raise RequestFailed(413, f"{count} images in one request; the limit is {max_images}")
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise unprocessable(f"input {INPUT!r}: parameters must be an object")
    if "binary_data_size" in parameters:
        images = _binary_images(parameters["binary_data_size"], binary)
    else:
        if binary:
            raise bad_request(f"{len(binary)} bytes of binary data, but no input has a binary_data_size")
        images = _json_images(tensor.get("data"))
    if len(images) != count:
        raise unprocessable(f"input {INPUT!r} holds {len(images)} images, its shape says {count}")
    return images


def _binary_images(size, binary: bytes) -> list[bytes]:
    """The images of Triton's BYTES serialisation: each a 4-byte little-endian length, then its bytes."""
    if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
        raise bad_request(f"binary_data_size {size!r} does not match the {len(binary)} bytes after the JSON header")
    images, offset = [], 0
    while offset < len(binary):
        if offset + 4 > len(binary):
            raise bad_request(f"binary data of input {INPUT!r} ends inside an element's 4-byte length")
        length = int.from_bytes(binary[offset : offset + 4], "little")
        if offset + 4 + length > len(binary):
            raise bad_request(f"element {len(images)} of input {INPUT!r} claims {length} bytes; {len(binary) - offset - 4} remain")
        images.append(binary[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return images


def _json_images(data) -> list[bytes]:
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise unprocessable(f"input {INPUT!r}: data must be a list of base64 strings (or send it as binary data)")
    images = []
    for index, item in enumerate(data):
        try:
            images.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise bad_request(f"element {index} of input {INPUT!r} is not base64 (in the JSON form each element is the base64 of an image)") from None
    return images


def detect_options(parameters: dict) -> DetectOptions:
    unknown = sorted(name for name in set(parameters) - set(OPTIONS) - set(NO_EFFECT) - {"binary_data_output"} if not name.startswith(RESERVED_PREFIX))
    if unknown:
        raise unprocessable(f"unknown parameters {', '.join(unknown)}; this model takes {', '.join(OPTIONS)}")

    def number(name: str, kind: type) -> float | int | None:
        value = parameters.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            raise unprocessable(f"parameter {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise unprocessable(f"parameter {name} must be finite, got {value!r}")
        return value

    classes = parameters.get("classes")
    if isinstance(classes, str):
        classes = tuple(name.strip() for name in classes.split(",") if name.strip()) or None
    elif isinstance(classes, list) and all(isinstance(name, str) for name in classes):
        classes = tuple(classes) or None
    elif classes is not None:
        raise unprocessable(f"parameter classes must be comma-separated class names (or a list), got {classes!r}")
    return DetectOptions(number("score_threshold", float), number("iou_threshold", float), number("max_detections", int), classes)


def requested_outputs(requested, parameters: dict) -> dict[str, bool]:
    """Requested output -> binary; every output (binary if binary_data_output) when none is named."""
    all_binary = parameters.get("binary_data_output", False)
    if not isinstance(all_binary, bool):
        raise unprocessable(f"parameter binary_data_output must be true or false, got {all_binary!r}")
    if requested is None:
        return {name: all_binary for name in OUTPUTS}
    if not isinstance(requested, list) or not all(isinstance(item, dict) for item in requested):
        raise unprocessable("outputs must be a list of objects with a name")
    outputs = {}
    for item in requested:
        name = item.get("name")
        if name not in OUTPUTS:
            raise unprocessable(f"unknown output {name!r}; this model gives {', '.join(OUTPUTS)}")
        binary = (item.get("parameters") or {}).get("binary_data", all_binary)
        if not isinstance(binary, bool):
            raise unprocessable(f"output {name}: binary_data must be true or false, got {binary!r}")
        outputs[name] = binary
    return outputs


def output_tensors(results: list[DetectionResult]) -> dict[str, np.ndarray]:
    """The four output tensors of a response's results (shapes in the module docstring)."""
    k = max((len(r.scores) for r in results), default=0)
    boxes = np.zeros((len(results), k, 4), NUMPY["FP32"])
    scores = np.zeros((len(results), k), NUMPY["FP32"])
    class_ids = np.full((len(results), k), -1, NUMPY["INT32"])
    for i, r in enumerate(results):
        n = len(r.scores)
        boxes[i, :n], scores[i, :n], class_ids[i, :n] = r.boxes, r.scores, r.labels
    num_detections = np.array([len(r.scores) for r in results], NUMPY["INT32"])
    return {"boxes": boxes, "scores": scores, "class_ids": class_ids, "num_detections": num_detections}


def write_response(model_name: str, request: InferRequest, results: list[DetectionResult]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of the inference response: JSON, followed by the binary outputs if any."""
    tensors = output_tensors(results)
    outputs, buffers = [], []
    for name, binary in request.outputs.items():
        array = tensors[name]
        tensor = {"name": name, "datatype": OUTPUTS[name], "shape": list(array.shape)}
        if binary:
            buffers.append(array.tobytes())
            tensor["parameters"] = {"binary_data_size": len(buffers[-1])}
        else:
            tensor["data"] = array.reshape(-1).tolist()  # [N * K * 4] etc., row-major
        outputs.append(tensor)
    response = {"model_name": model_name, "model_version": VERSION, "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not buffers:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(buffers), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def binary_request(images: list[bytes], parameters: dict | None = None) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of an inference request carrying `images` as binary tensor data and asking
    for every output as binary data, as tritonclient sends it (`vfnet loadtest --protocol v2`)."""
    data = b"".join(len(image).to_bytes(4, "little") + image for image in images)
    request = {
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [len(images)], "parameters": {"binary_data_size": len(data)}}],
        "parameters": {**(parameters or {}), "binary_data_output": True},
    }
    header = json.dumps(request, separators=(",", ":")).encode()
    return header + data, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def model_metadata(model_name: str, platform: str, class_names: list[str], parameters: dict) -> dict:
    """The protocol's model metadata, plus the class names (class_ids index them)."""
    return {
        "name": model_name,
        "versions": [VERSION],
        "platform": platform,
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": name, "datatype": datatype, "shape": OUTPUT_SHAPES[name]} for name, datatype in OUTPUTS.items()],
        "class_names": class_names,
        "parameters": parameters,
    }


def model_config(model_name: str, backend: str, max_batch_size: int, max_batch_delay_ms: float, queue_size: int) -> dict:
    """The JSON form of Triton's ModelConfig for our model (Triton's model configuration extension,
    `GET /v2/models/{name}/config`, and the ModelConfig call over gRPC): what perf_analyzer and
    tritonclient's get_model_config read.

    max_batch_size is 0 although the server batches: in Triton's terms a request's batch is its own
    [N] images, and the batching across requests happens inside our server. With max_batch_size > 0
    Triton's clients take the first dimension of every input as the batch and strip it, so `images`
    ([-1]) would become a tensor of shape [], and perf_analyzer would send nothing usable.
    The dynamic_batching block describes the batcher that exists: up to `max_batch_size` images a
    backend call, `max_batch_delay_ms` of waiting for company, `queue_size` images queued at most."""
    return {
        "name": model_name,
        "platform": PLATFORMS.get(backend, backend),
        "backend": backend,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 0,
        "input": [{"name": INPUT, "data_type": TRITON_TYPES["BYTES"], "format": "FORMAT_NONE", "dims": [-1]}],
        "output": [{"name": name, "data_type": TRITON_TYPES[datatype], "dims": OUTPUT_SHAPES[name]} for name, datatype in OUTPUTS.items()],
        "dynamic_batching": {
            "preferred_batch_size": [max_batch_size],
            "max_queue_delay_microseconds": round(max_batch_delay_ms * 1000),
            "default_queue_policy": {"max_queue_size": queue_size},
        },
        "instance_group": [{"name": model_name, "count": 1, "kind": "KIND_CPU" if backend in ("onnxruntime", "openvino") else "KIND_AUTO"}],
    }
