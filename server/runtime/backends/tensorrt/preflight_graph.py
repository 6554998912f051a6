"""The ONNX graph as the pre-flight's checks see it (preflight.py): every node, and per tensor its
element type, shape where known, constant value and producer. The onnx package is imported lazily."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...artifact import ModelLoadError
from .preflight_rules import STANDARD_DOMAINS, TENSORRT_TYPES


def load_graph(model):
    try:
        import onnx
    except ImportError:
        raise ModelLoadError("the TensorRT pre-flight reads ONNX files with onnx: pip install 'vfnet-serve[tensorrt]'") from None
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such file")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # DecodeError and friends
            raise ModelLoadError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    if proto.functions:  # the parser imports local functions node by node: check their nodes
        import onnx.inliner

        proto = onnx.inliner.inline_local_functions(proto)
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception:  # an inference the onnx package cannot do: check with the types the file states
        return proto


@dataclass
class Graph:
    """Every node (subgraphs' too), and per tensor name: its ONNX element type name, its shape (dims
    an int or None) where known, where it is a constant its initializer or Constant node (`value`
    reads it), the node producing it, and the graph's output names."""

    nodes: list
    types: dict[str, str]
    shapes: dict[str, tuple]
    constants: dict[str, object]  # name -> TensorProto or Constant NodeProto
    producers: dict[str, object]
    outputs: set[str]
    opset: int | None

    @classmethod
    def of(cls, proto) -> Graph:
        import onnx

        graph = cls([], {}, {}, {}, {}, {o.name for o in proto.graph.output}, None)
        graph.opset = next((o.version for o in proto.opset_import if o.domain in STANDARD_DOMAINS), None)
        for g in _graphs(proto.graph):
            for value in [*g.input, *g.output, *g.value_info]:
                tensor = value.type.tensor_type
                if tensor.elem_type:
                    graph.types[value.name] = onnx.TensorProto.DataType.Name(tensor.elem_type)
                if tensor.HasField("shape"):
                    graph.shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
            for init in g.initializer:
                graph.types[init.name] = onnx.TensorProto.DataType.Name(init.data_type)
                graph.shapes[init.name] = tuple(init.dims)
                graph.constants[init.name] = init
            for node in g.node:
                graph.nodes.append(node)
                for output in node.output:
                    graph.producers[output] = node
                if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS and node.output:
                    graph.constants[node.output[0]] = node
        return graph

    def value(self, name: str):
        """A constant's value (numpy); None when not a constant, stored outside the file, or one of
        the Constant attributes TensorRT refuses."""
        import numpy as np
        import onnx
        from onnx import helper, numpy_helper

        proto = self.constants.get(name)
        if isinstance(proto, onnx.TensorProto):
            return None if proto.data_location == onnx.TensorProto.EXTERNAL else numpy_helper.to_array(proto)
        for attribute in proto.attribute if proto is not None else ():
            if attribute.name == "value":
                return numpy_helper.to_array(attribute.t)
            if attribute.name in ("value_int", "value_ints", "value_float", "value_floats"):
                return np.array(helper.get_attribute_value(attribute))
        return None

    def trt_type(self, name: str) -> str | None:
        """The TensorRT type of a tensor (None: unknown, or no TensorRT type: see onnx_type)."""
        onnx_type = self.types.get(name)
        producer = self.producers.get(name)
        if onnx_type == "UINT8" and producer is not None and producer.op_type == "QuantizeLinear":
            return "INT8"  # the parser quantises to INT8 where ONNX says UINT8
        return TENSORRT_TYPES.get(onnx_type)

    def is_constant(self, name: str) -> bool:
        return name in self.constants


def _graphs(graph):
    """`graph` and every subgraph of its nodes (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _graphs(sub)


def label(node) -> str:
    return node.name or f"(unnamed, output {node.output[0] if node.output else ''!r})"


def attributes(node) -> dict:
    from onnx import helper

    values = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        values[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return values


def shown(values) -> str:
    return ", ".join(str(v) for v in values)
