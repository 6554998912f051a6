"""ModelInfer's messages read into the Open Inference Protocol's InferRequest, and detections written
as its response, through open_inference_tensors.py's readers and writers: a gRPC request is checked
exactly as an HTTP one is, and refused with the same statuses (400 malformed, 413 too many images,
422 inputs, outputs or parameters this model does not take) and the same words.

Input `images`, datatype BYTES, shape [N], its N encoded images either
- in `raw_input_contents[i]` (i: the input's index), each image as a 4-byte little-endian length
  followed by its bytes (Triton's BYTES serialisation, as tritonclient.grpc sends it), or
- in the input's `contents.bytes_contents`, one element per image.
Parameters (InferParameter, any of its types): score_threshold, iou_threshold, max_detections,
classes (comma-separated class names), as over HTTP; Triton's reserved ones are accepted and have
no effect; any other is refused.

Outputs (those requested, in the order requested; all four when none is), each as raw
little-endian bytes in `raw_output_contents` at its index in `outputs`:
    boxes           FP32  [N, K, 4]  xyxy in original-image pixels
    scores          FP32  [N, K]     IACS, best first
    class_ids       INT32 [N, K]     (-1 in padding rows)
    num_detections  INT32 [N]
K is the largest detection count in the response; rows past an image's num_detections are padding.
"""

from __future__ import annotations

from vfnet.server.runtime import DetectionResult

from .. import open_inference_tensors as tensors
from . import inference_pb2 as pb


def parameter_values(parameters) -> dict:
    """A protobuf map<string, InferParameter> as {name: its value} (bool, int, str or float)."""
    values = {}
    for name, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")  # the field set, or None
        values[name] = getattr(value, kind) if kind else None
    return values


def _elements(request: pb.ModelInferRequest, index: int) -> bytes | None:
    """Input `index`'s elements in the 4-byte-length serialisation, or None when it has none."""
    tensor = request.inputs[index]
    if request.raw_input_contents:
        if tensor.HasField("contents"):
            raise tensors.bad_request(f"input {tensor.name!r} has both contents and raw_input_contents; send its elements in one of them")
        return request.raw_input_contents[index]
    if tensor.HasField("contents"):
        return b"".join(len(element).to_bytes(4, "little") + element for element in tensor.contents.bytes_contents)
    return None


def read_request(request: pb.ModelInferRequest, max_images: int) -> tensors.InferRequest:
    """The images, filters and requested outputs of a ModelInfer request. RequestFailed: 400 for
    elements that are not the protocol's, 413 for more than `max_images` images, 422 for tensors or
    parameters this model does not take."""
    if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
        raise tensors.bad_request(
            f"raw_input_contents holds {len(request.raw_input_contents)} tensors for {len(request.inputs)} inputs; it needs one per input"
        )
    inputs, elements = [], []
    for index, tensor in enumerate(request.inputs):
        inputs.append({"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "parameters": parameter_values(tensor.parameters)})
        elements.append(_elements(request, index))
        if elements[-1] is not None:
            inputs[-1]["parameters"]["binary_data_size"] = len(elements[-1])  # as HTTP's binary tensor data says it
    if len(inputs) == 1 and inputs[0]["name"] == tensors.INPUT and elements[0] is None:
        raise tensors.unprocessable(f"input {tensors.INPUT!r} has no elements; send the images in raw_input_contents or in contents.bytes_contents")
    images = tensors.input_images(inputs, elements[0] if elements else b"", max_images)  # checks names, datatype, shape, count
    parameters = parameter_values(request.parameters)
    outputs = [{"name": output.name, "parameters": parameter_values(output.parameters)} for output in request.outputs] or None
    return tensors.InferRequest(request.id or None, images, tensors.detect_options(parameters), tensors.requested_outputs(outputs, parameters))


def write_response(model_name: str, request: tensors.InferRequest, results: list[DetectionResult]) -> pb.ModelInferResponse:
    """The ModelInfer response: the requested outputs' shapes, and their bytes in raw_output_contents."""
    arrays = tensors.output_tensors(results)
    response = pb.ModelInferResponse(model_name=model_name, model_version=tensors.VERSION, id=request.id or "")
    for name in request.outputs:
        response.outputs.add(name=name, datatype=tensors.OUTPUTS[name], shape=arrays[name].shape)
        response.raw_output_contents.append(arrays[name].tobytes())  # little-endian (NUMPY's dtypes), row-major
    return response


def infer_request(model_name: str, images: list[bytes], parameters: dict | None = None) -> pb.ModelInferRequest:
    """A ModelInfer request carrying `images` in raw_input_contents and asking for every output, as
    tritonclient.grpc sends it (`vfnet loadtest --protocol v2-grpc`). `parameters`: name -> bool,
    int, float or str."""
    request = pb.ModelInferRequest(model_name=model_name)
    request.inputs.add(name=tensors.INPUT, datatype="BYTES", shape=[len(images)])
    request.raw_input_contents.append(b"".join(len(image).to_bytes(4, "little") + image for image in images))
    kinds = {bool: "bool_param", int: "int64_param", float: "double_param", str: "string_param"}
    for name, value in (parameters or {}).items():
        setattr(request.parameters[name], kinds[type(value)], value)
    return request
