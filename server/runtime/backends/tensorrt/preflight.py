"""A CPU pre-flight of an ONNX graph against what TensorRT's ONNX parser imports (no TensorRT, no torch).

`vfnet export trt` runs it before it needs TensorRT, so a graph the parser would refuse is refused
here, on any machine, with every reason at once: `preflight(path or ModelProto)` returns the
problems, `require_preflight` raises ModelLoadError listing them. Each problem names the node (name
and operator) and the rule it breaks. The onnx package is imported only when a function here runs.

The rules, and where they come from, are preflight_rules.py; how a graph is read,
preflight_graph.py.

What it cannot see: layers TensorRT refuses while building (shapes only known then, tactics, memory),
the plugin library actually being loadable, rules of operators our exports never use that hang on
values computed at run time (e.g. Resize's "axes must be an iota" with tensor scales), and anything
inside If/Loop bodies beyond the same per-node rules. It errs towards refusing: where the parser needs
a value "resolvable to a constant", only an initializer or a Constant node's output counts here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...artifact import ModelLoadError
from .preflight_graph import Graph, attributes, label, load_graph, shown
from .preflight_rules import (
    ATTRIBUTE_VALUES,
    CONSTANT_INPUTS,
    FIELD_TYPES,
    OPSET_RANGE,
    PARSER_PLUGIN_ATTRIBUTES,
    PLUGIN_DOMAIN,
    PLUGINS,
    REFUSED_ATTRIBUTES,
    SAME_VALUE_OPS,
    STANDARD_DOMAINS,
    SUPPORTED_OUTPUTS,
    SUPPORTED_TYPES,
    TENSOR_FIELD_TYPES,
    TENSORRT_TYPES,
    TOPK_MAX_K,
    TYPED_INPUTS,
    TYPED_OUTPUTS,
    UNIT_DILATIONS,
    PluginCreator,
    PluginField,
)


@dataclass(frozen=True)
class Problem:
    """One reason TensorRT would refuse the graph: the node (name, operator) and the rule it breaks.
    For a fact of the whole graph, `op_type` is empty and `node` says what it is about."""

    node: str
    op_type: str
    rule: str

    def __str__(self) -> str:
        return f"{self.op_type} node {self.node!r}: {self.rule}" if self.op_type else f"{self.node}: {self.rule}"


MAX_LISTED = 10  # problems spelt out in require_preflight's one-line error


def preflight(model) -> list[Problem]:
    """The problems TensorRT's ONNX parser (or our plugin's creator) would have with `model`: a path
    to an ONNX file or an onnx.ModelProto (left unchanged). An empty list: nothing found."""
    proto = load_graph(model)
    graph = Graph.of(proto)
    problems = _model_problems(proto, graph)
    for node in graph.nodes:
        problems += _node_problems(node, graph)
    return problems


def require_preflight(model, source: str | None = None) -> None:
    """ModelLoadError, one line listing the problems (the first MAX_LISTED), unless `model` passes."""
    problems = preflight(model)
    if not problems:
        return
    source = source or (str(model) if isinstance(model, str | Path) else "the ONNX graph")
    listed = "; ".join(str(problem) for problem in problems[:MAX_LISTED])
    more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    count = f"{len(problems)} problem{'s' * (len(problems) > 1)}"
    raise ModelLoadError(f"{source}: TensorRT's ONNX parser would refuse this graph ({count}): {listed}{more}")


# ---- The rules. ----


def _model_problems(proto, graph: Graph) -> list[Problem]:
    """Facts of the whole graph: the opset, and the types of its inputs, outputs and initializers."""
    low, high = OPSET_RANGE
    problems = []
    if graph.opset is None or not low <= graph.opset <= high:
        problems.append(Problem("model", "", f"ai.onnx opset {graph.opset}; TensorRT's parser supports opsets {low} to {high}"))
    inputs = [(f"graph input {v.name!r}", v.name) for v in proto.graph.input]
    outputs = [(f"graph output {v.name!r}", v.name) for v in proto.graph.output]
    initializers = [(f"initializer {i.name!r}", i.name) for i in proto.graph.initializer]
    for where, name in inputs + outputs + initializers:
        onnx_type = graph.types.get(name)
        if onnx_type and onnx_type not in TENSORRT_TYPES:
            problems.append(Problem(where, "", f"type {onnx_type} has no TensorRT equivalent"))
    return problems


def _node_problems(node, graph: Graph) -> list[Problem]:
    def problem(rule: str) -> Problem:
        return Problem(label(node), node.op_type, rule)

    if node.domain == PLUGIN_DOMAIN:
        creator = PLUGINS.get(node.op_type)
        if creator is None:
            return [problem(f"{PLUGIN_DOMAIN} has no plugin {node.op_type!r} (ours: {shown(PLUGINS)}); TensorRT would find no creator for it")]
        return [problem(rule) for rule in _plugin_rules(node, creator, graph)]
    if node.domain not in STANDARD_DOMAINS:
        return [problem(f"domain {node.domain!r} is neither ai.onnx nor {PLUGIN_DOMAIN}: TensorRT's parser has no importer for it")]
    if node.op_type not in SUPPORTED_TYPES:
        return [problem(f"TensorRT's parser has no importer for ai.onnx {node.op_type!r} (it would look for a plugin of that name and find none)")]
    rules = _type_rules(node, graph) + _constant_input_rules(node, graph) + _attribute_rules(node) + _output_rules(node, graph)
    rules += _value_rules(node, graph)
    return [problem(rule) for rule in rules]


def _type_rules(node, graph: Graph) -> list[str]:
    """The "Supported Types" of the operator, for the values it binds (see TYPED_INPUTS)."""
    allowed = SUPPORTED_TYPES[node.op_type]
    checked = [(f"input {i} {node.input[i]!r}", node.input[i]) for i in _typed_inputs(node, graph.opset) if i < len(node.input) and node.input[i]]
    if node.op_type in TYPED_OUTPUTS and node.output:
        checked.append((f"output 0 {node.output[0]!r}", node.output[0]))
    rules = []
    for where, name in checked:
        onnx_type = graph.types.get(name)
        if onnx_type is None or onnx_type == "UNDEFINED":
            continue
        trt_type = graph.trt_type(name)
        if trt_type not in allowed:
            rules.append(f"{where} is {onnx_type}; TensorRT's {node.op_type} takes {shown(allowed)}")
    return rules


def _typed_inputs(node, opset: int | None) -> tuple[int, ...]:
    """The positions of the inputs the operator's type list binds: TYPED_INPUTS, else the inputs
    whose ONNX type is that of input 0 (by the operator's schema; input 0 alone without one)."""
    if node.op_type in TYPED_INPUTS:
        return TYPED_INPUTS[node.op_type]
    import onnx

    try:
        formal = onnx.defs.get_schema(node.op_type, opset or OPSET_RANGE[1], "").inputs
    except onnx.defs.SchemaError:
        return (0,)
    if not formal:
        return ()
    variadic = formal[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic

    def type_of(i: int) -> str | None:
        if i < len(formal):
            return formal[i].type_str
        return formal[-1].type_str if variadic else None

    return tuple(i for i in range(len(node.input)) if type_of(i) == formal[0].type_str)


def _constant_input_rules(node, graph: Graph) -> list[str]:
    rules = []
    for i, name in CONSTANT_INPUTS.get(node.op_type, {}).items():
        if i < len(node.input) and node.input[i] and not graph.is_constant(node.input[i]):
            rules.append(f"input {i} ({name}) {node.input[i]!r} must be a constant (an initializer or a Constant node's output)")
    return rules


def _attribute_rules(node) -> list[str]:
    given = attributes(node)
    rules = []
    for name, allowed in ATTRIBUTE_VALUES.get(node.op_type, {}).items():
        if name in given and given[name] not in allowed:
            rules.append(f"attribute {name} = {given[name]!r}; TensorRT supports {shown(allowed)}")
    for name in REFUSED_ATTRIBUTES.get(node.op_type, ()):
        if name in given:
            rules.append(f"attribute {name} is not supported by TensorRT")
    if node.op_type in UNIT_DILATIONS and any(d != 1 for d in given.get("dilations", ())):
        rules.append(f"attribute dilations = {list(given['dilations'])}; TensorRT's {node.op_type} needs them empty or all ones")
    return rules


def _output_rules(node, graph: Graph) -> list[str]:
    rules = []
    supported = SUPPORTED_OUTPUTS.get(node.op_type, len(node.output))
    for i, name in enumerate(node.output):
        if not name:
            continue
        if i >= supported:
            rules.append(f"output {i} {name!r} is not supported by TensorRT (only the first {supported} of {node.op_type}'s outputs)")
        if graph.trt_type(name) == "UINT8" and name not in graph.outputs:
            rules.append(f"output {i} {name!r} is UINT8; TensorRT allows UINT8 only for the graph's inputs and outputs")
    return rules


def _value_rules(node, graph: Graph) -> list[str]:
    """The rules that hang on input values and shapes, operator by operator."""
    op, inputs, rules = node.op_type, list(node.input), []
    if op == "TopK" and len(inputs) > 1 and inputs[1]:
        if graph.is_constant(inputs[1]):
            k = graph.value(inputs[1])  # None: stored outside the file, not read here
            if k is not None and (k.size != 1 or not 1 <= int(k.reshape(-1)[0]) <= TOPK_MAX_K):
                rules.append(f"K is {k.reshape(-1).tolist()}; TensorRT's TopK takes one K from 1 to {TOPK_MAX_K}")
        else:
            bound = _upper_bound(inputs[1], graph)
            if bound is None or bound > TOPK_MAX_K:
                said = "has no upper bound here" if bound is None else f"can reach {bound:g}"
                rules.append(
                    f"K {inputs[1]!r} is computed at run time and {said}; TensorRT's TopK fails at run time for K above {TOPK_MAX_K} "
                    f"(make K a constant, or Min(..., a constant <= {TOPK_MAX_K}))"
                )
    if op == "NonMaxSuppression":
        for i, name in ((0, "boxes"), (1, "scores")):
            shape = graph.shapes.get(inputs[i]) if i < len(inputs) else None
            if shape is not None and len(shape) != 3:
                rules.append(f"input {i} ({name}) {inputs[i]!r} has rank {len(shape)}; TensorRT's NonMaxSuppression needs 3-D boxes and scores")
        for i, name in ((2, "max_output_boxes_per_class"), (3, "iou_threshold"), (4, "score_threshold")):
            shape = graph.shapes.get(inputs[i]) if i < len(inputs) and inputs[i] else None
            if shape is not None and all(d is not None for d in shape) and _volume(shape) != 1:
                rules.append(f"input {i} ({name}) {inputs[i]!r} has shape {list(shape)}; TensorRT needs a single value")
    if op == "DeformConv":
        shape = graph.shapes.get(inputs[0])
        if shape is not None and len(shape) not in (3, 4):
            rules.append(f"input 0 {inputs[0]!r} has rank {len(shape)}; TensorRT's DeformConv takes 1-D or 2-D spatial inputs (rank 3 or 4)")
        pads = list(attributes(node).get("pads", ()))
        if pads[: len(pads) // 2] != pads[len(pads) // 2 :]:
            rules.append(f"attribute pads = {pads}; TensorRT's DeformConv needs the same padding at the beginning and end of each axis")
    if op in ("QuantizeLinear", "DequantizeLinear") and len(inputs) > 2 and inputs[2]:
        zero_point = graph.value(inputs[2])
        if zero_point is not None and zero_point.any():
            rules.append(f"zero point {inputs[2]!r} is not all zeros; TensorRT supports symmetric quantisation only")
    if op == "Dropout" and len(inputs) > 2 and inputs[2]:
        training = graph.value(inputs[2])
        if training is not None and training.any():
            rules.append("training_mode is true; TensorRT runs Dropout for inference only")
    return rules


def _upper_bound(name: str, graph: Graph, depth: int = 0) -> float | None:
    """A number `name`'s values never exceed, where the graph shows one: a constant, a Min with one,
    a Clip's max, carried through SAME_VALUE_OPS. None where none is seen."""
    if graph.is_constant(name):
        value = graph.value(name)
        return None if value is None or value.size == 0 else float(value.max())
    node = graph.producers.get(name)
    if node is None or depth > 64:
        return None
    if node.op_type in SAME_VALUE_OPS:
        return _upper_bound(node.input[0], graph, depth + 1)
    if node.op_type == "Min":
        bounds = [b for b in (_upper_bound(i, graph, depth + 1) for i in node.input) if b is not None]
        return min(bounds) if bounds else None
    if node.op_type == "Clip" and len(node.input) > 2 and node.input[2]:
        return _upper_bound(node.input[2], graph, depth + 1)
    return None


def _volume(shape: tuple) -> int:
    volume = 1
    for d in shape:
        volume *= d
    return volume


def _plugin_rules(node, creator: PluginCreator, graph: Graph) -> list[str]:
    """A node for one of our plugins against its creator: the fields (every one required, of a type
    and length the creator reads, in its range), no attribute that is not a field, the version and
    namespace the parser would look up, and the input and output types the plugin accepts."""
    by_name = {a.name: a for a in node.attribute}
    fields = {f.name: f for f in creator.fields}
    rules = []
    for name in by_name:
        if name not in fields and name not in PARSER_PLUGIN_ATTRIBUTES:
            rules.append(f"attribute {name!r} is not a field of the {creator.name} creator (its fields: {shown(fields)}); TensorRT would drop it")
    for field in creator.fields:
        if field.name not in by_name:
            types = "/".join(field.types)
            rules.append(f"the {creator.name} creator's required field {field.name!r} ({types}, {field.meaning}) has no attribute")
            continue
        rules += _field_rules(by_name[field.name], field, creator)
    for name, wanted in (("plugin_version", creator.version), ("plugin_namespace", creator.namespace)):
        given = attributes(node).get(name, wanted)
        if given != wanted:
            rules.append(f"attribute {name} = {given!r}; the {creator.name} creator's is {wanted!r}")
    rules += _plugin_type_rules(node, creator, graph)
    return rules


def _field_rules(attribute, field: PluginField, creator: PluginCreator) -> list[str]:
    """What TensorRT's parser makes of one attribute (FIELD_TYPES), against what the creator reads."""
    import onnx
    from onnx import helper

    kind = onnx.AttributeProto.AttributeType.Name(attribute.type)
    value = helper.get_attribute_value(attribute)
    if kind == "TENSOR":
        field_type = TENSOR_FIELD_TYPES.get(onnx.TensorProto.DataType.Name(attribute.t.data_type))
        values = onnx.numpy_helper.to_array(attribute.t).reshape(-1).tolist()
    else:
        field_type = FIELD_TYPES.get(kind)
        values = list(value) if isinstance(value, list | bytes) else [value]  # a STRING: its characters
    if field_type is None:
        return [f"attribute {field.name!r} is a {kind}, which TensorRT's parser cannot pass as a plugin field"]
    if field_type not in field.types or len(values) != field.length:
        return [
            f"attribute {field.name!r} is a {kind}, which TensorRT passes as a {field_type} field of length {len(values)}; "
            f"the {creator.name} creator reads {field.name} as {'/'.join(field.types)} of length {field.length} (write an INT)"
        ]
    if not all(field.low <= v <= field.high for v in values):
        return [f"attribute {field.name} = {value}; the {creator.name} creator accepts {field.low}..{field.high} ({field.meaning})"]
    return []


def _plugin_type_rules(node, creator: PluginCreator, graph: Graph) -> list[str]:
    if len(node.input) != len(creator.inputs) or any(not name for name in node.input):
        names = shown(i.name for i in creator.inputs)
        return [f"{len(node.input)} inputs; {creator.name} takes {len(creator.inputs)} ({names})"]
    types = {spec.name: graph.trt_type(name) for spec, name in zip(creator.inputs, node.input)}
    rules = []
    for i, (spec, name) in enumerate(zip(creator.inputs, node.input)):
        given = types[spec.name]
        if given is None:
            continue
        if spec.types and given not in spec.types:
            rules.append(f"input {i} ({spec.name}) {name!r} is {graph.types[name]}; {creator.name} takes {shown(spec.types)}")
        if spec.same_as and types[spec.same_as] is not None and given != types[spec.same_as]:
            rules.append(f"input {i} ({spec.name}) {name!r} is {graph.types[name]}; {creator.name} takes it in the type of {spec.same_as}")
    output, wanted = (node.output[0] if node.output else ""), types.get(creator.output_same_as)
    if output and wanted is not None and graph.trt_type(output) not in (None, wanted):
        rules.append(f"output 0 {output!r} is {graph.types[output]}; {creator.name} returns the type of {creator.output_same_as}")
    return rules
