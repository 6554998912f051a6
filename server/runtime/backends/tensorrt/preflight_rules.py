"""What TensorRT's ONNX parser accepts, as data: the facts preflight.py checks a graph against.

Where the rules come from (read, not copied; re-read them when TensorRT moves on):

    OPS       onnx/onnx-tensorrt docs/operators.md as of TensorRT 10.15 (the file the onnx-tensorrt
              submodule of NVIDIA/TensorRT v10.15, commit fa5aa9f6, ships): the supported operators,
              their "Supported Types" and "Restrictions" columns, opset 9..24, UINT8 only as network
              input or output, DOUBLE cast down to FLOAT.
    IMPORTER  onnx-tensorrt onnxOpImporters.cpp at commit 0137504e (10.6..10.9 era) and release
              10.1-GA (96e78110): TopK takes K as a tensor (dynamic K since 8.6), NonMaxSuppression
              takes every threshold as a tensor (the "must be initializers" rule was TensorRT 8.x's)
              but needs 3-D boxes and scores and one-element limits, DeformConv needs a 1-D or 2-D
              spatial input and equal begin/end pads, Q/DQ zero points must be all zeros (symmetric
              quantisation only; a UINT8 quantisation becomes INT8), the fallback plugin importer
              (any operator without an importer is looked up as a plugin named after it, whatever
              its domain) and how it turns attributes into plugin fields (INT/INTS -> kINT32,
              FLOAT(S) -> kFLOAT32, STRING(S) -> kCHAR, TENSOR by dtype, other attribute types
              refused; a missing field only warns; attributes that are not fields are dropped);
              ModelImporter.cpp (10.1-GA): dispatch by op_type alone, UINT8 intermediates refused;
              importerUtils.cpp at fa5aa9f6 (10.15): a plugin is found by name, version, namespace.
    TENSORRT  NVIDIA/TensorRT include/NvInfer.h (v10.15, v10.16, v11.1 alike): ITopKLayer "only
              values of K up to 3840 are supported", and a run-time K "larger than 3840 will result
              in a runtime error" (operators.md words it "less than 3840"; the header is followed),
              so a K computed at run time passes only with a bound the graph shows (a Min with a
              constant): stricter than the parser, which takes any K tensor. IShapeLayer takes a
              tensor "of any type", so Shape and Size may read a UINT8 input.
    PLUGIN    trt_plugins/star_deform_conv/starDeformConvPlugin.cpp: StarDeformConvPluginCreator,
              name "StarDeformConv", version "1", namespace "", one field `stride` (kINT32, length 1;
              createPlugin also reads kINT64, refuses anything outside 1..4096 and fails without it);
              supportsFormatCombination: features FP32 or FP16, bbox_init FP32, weight and output of
              the features' type.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---- Types: ONNX element types as operators.md names them (anything else has no TensorRT type). ----

TENSORRT_TYPES = {
    "FLOAT": "FP32",
    "DOUBLE": "FP32",  # "TensorRT will attempt to cast DOUBLE down to FLOAT"
    "FLOAT16": "FP16",
    "BFLOAT16": "BF16",
    "INT32": "INT32",
    "INT64": "INT64",
    "INT8": "INT8",
    "UINT8": "UINT8",  # network inputs and outputs only
    "BOOL": "BOOL",
    "FLOAT8E4M3FN": "FP8",
    "INT4": "INT4",
    "FLOAT4E2M1": "FP4",
}

FLOATS = ("FP32", "FP16", "BF16")
NUMBERS = FLOATS + ("INT32", "INT64")
ANY = NUMBERS + ("BOOL",)
FP32_FP16 = ("FP32", "FP16")

# ---- Operators: every operator operators.md marks supported, with its "Supported Types". ----

SUPPORTED_TYPES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        (
            "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "BatchNormalization", "Ceil", "Celu", "Clip", "Conv",
            "ConvTranspose", "Cos", "Cosh", "CumSum", "Dropout", "Einsum", "Elu", "Erf", "Exp", "Floor", "Gemm", "GlobalAveragePool",
            "GlobalLpPool", "GlobalMaxPool", "GroupNormalization", "GRU", "HardSigmoid", "HardSwish", "Hardmax", "ImageScaler",
            "InstanceNormalization", "IsInf", "LayerNormalization", "LeakyRelu", "Log", "LogSoftmax", "LRN", "LSTM", "LpNormalization",
            "LpPool", "MatMul", "MaxPool", "MeanVarianceNormalization", "ParametricSoftplus", "PRelu", "QuantizeLinear", "RandomNormal",
            "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Reciprocal", "Resize", "RMSNormalization", "RNN",
            "RotaryEmbedding", "Round", "ScaledTanh", "Scan", "Selu", "Sigmoid", "Sin", "Sinh", "Softmax", "Softplus", "Softsign",
            "Sqrt", "Tan", "Tanh", "ThresholdedRelu", "Upsample",
        ),
        FLOATS,
    ),
    **dict.fromkeys(
        (
            "Abs", "Add", "ArgMax", "ArgMin", "DepthToSpace", "Div", "Equal", "Greater", "GreaterOrEqual", "IsNaN", "Less", "LessOrEqual",
            "Max", "Min", "Mod", "Mul", "Neg", "Pad", "Pow", "Range", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
            "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Scatter", "ScatterElements",
            "ScatterND", "Shrink", "Sign", "SpaceToDepth", "Sub", "Sum", "TopK",
        ),
        NUMBERS,
    ),
    **dict.fromkeys(
        (
            "Concat", "Expand", "EyeLike", "Flatten", "Gather", "GatherElements", "GatherND", "Identity", "If", "Loop", "OneHot",
            "Reshape", "ReverseSequence", "Shape", "Size", "Slice", "Split", "Squeeze", "Tile", "Transpose", "Trilu", "Unsqueeze",
            "Where",
        ),
        ANY,
    ),
    **dict.fromkeys(("And", "Not", "Or", "Xor"), ("BOOL",)),
    **dict.fromkeys(
        ("BlackmanWindow", "DeformConv", "GridSample", "HammingWindow", "HannWindow", "Mish", "NonMaxSuppression", "NonZero", "RoiAlign"),
        FP32_FP16,
    ),
    **dict.fromkeys(("Cast", "CastLike"), NUMBERS + ("UINT8", "BOOL")),
    **dict.fromkeys(("Constant", "ConstantOfShape"), FLOATS + ("FP8", "FP4", "INT4", "INT32", "INT64", "BOOL")),
    "Attention": FLOATS + ("INT8", "FP8"),
    "DequantizeLinear": ("INT8", "FP8", "FP4", "INT4"),
    "Gelu": FLOATS + ("INT8", "INT32", "INT64"),
    "Mean": FLOATS + ("FP8", "INT32", "INT64"),
    "STFT": ("FP32",),
    "TensorScatter": FLOATS + ("INT32",),
}  # fmt: skip

# Which values the "Supported Types" column binds: by default every input typed like input 0 (its
# ONNX type variable, e.g. Concat's inputs, Range's start/limit/delta, NonMaxSuppression's float
# inputs; not Gather's indices or Reshape's shape). These differ:
TYPED_INPUTS = {
    "Where": (1, 2),  # X and Y; the condition is BOOL
    "QuantizeLinear": (0,),  # the data; the zero point is checked by value (must be 0)
    "DequantizeLinear": (0,),
    "Shape": (),  # read only the dimensions: NvInfer.h's IShapeLayer takes a tensor "of any type"
    "Size": (),
}
TYPED_OUTPUTS = ("Cast", "CastLike", "Constant", "ConstantOfShape", "EyeLike", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike")

OPSET_RANGE = (9, 24)  # "supports operators in the inclusive range of opset 9 to opset 24"
STANDARD_DOMAINS = ("", "ai.onnx")

# ---- Restrictions the parser enforces on inputs, attributes and outputs. ----

REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")

# Inputs that must be an initializer or a Constant node's output ("must be an initializer", "must be
# a build-time constant", "must be resolvable to a constant"), by position.
CONSTANT_INPUTS: dict[str, dict[int, str]] = {
    **{op: {1: "axes"} for op in REDUCE_OPS},
    "CumSum": {1: "axis"},
    "Dropout": {2: "training_mode"},
    "OneHot": {1: "depth"},
    "Squeeze": {1: "axes"},
    "Unsqueeze": {1: "axes"},
    "STFT": {1: "frame_step", 2: "window"},
}

# Attribute values the parser accepts (an absent attribute takes ONNX's default, which it accepts).
ATTRIBUTE_VALUES: dict[str, dict[str, tuple]] = {
    "Resize": {
        "mode": ("nearest", "linear"),
        "coordinate_transformation_mode": ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"),
        "nearest_mode": ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil"),
        "keep_aspect_ratio_policy": ("stretch",),
        "antialias": (0,),
    },
    "Upsample": {"mode": ("nearest", "linear", "bilinear")},
    "TopK": {"sorted": (1,)},
    "NonMaxSuppression": {"center_point_box": (0, 1)},
    "LSTM": {"input_forget": (0,), "layout": (0,)},
    "ScatterND": {"reduction": ("none",)},
}
REFUSED_ATTRIBUTES = {"Constant": ("sparse_value", "value_string", "value_strings")}
UNIT_DILATIONS = ("AveragePool", "MaxPool", "LpPool")  # "`dilations` must be empty or all ones"
SUPPORTED_OUTPUTS = {"MaxPool": 1, "LayerNormalization": 1}  # MaxPool's Indices, LayerNormalization's Mean and InvStdDev

TOPK_MAX_K = 3840  # NvInfer.h, ITopKLayer: K up to 3840; a larger run-time K is a run-time error
SAME_VALUE_OPS = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast")  # carry a bound on K through

# ---- Our TensorRT plugins (domain trt.plugins), as their creators declare them. ----

PLUGIN_DOMAIN = "trt.plugins"
PARSER_PLUGIN_ATTRIBUTES = ("plugin_version", "plugin_namespace")  # read by the parser, not fields

# The plugin field type TensorRT's parser makes of each ONNX attribute type (a TENSOR attribute's
# field type comes from its element type); any other attribute type is refused.
FIELD_TYPES = {"INT": "INT32", "INTS": "INT32", "FLOAT": "FLOAT32", "FLOATS": "FLOAT32", "STRING": "CHAR", "STRINGS": "CHAR"}
TENSOR_FIELD_TYPES = {"FLOAT": "FLOAT32", "INT8": "INT8", "INT16": "INT16", "INT32": "INT32", "STRING": "CHAR", "FLOAT16": "FLOAT16", "BFLOAT16": "BF16", "DOUBLE": "FLOAT64"}  # fmt: skip


@dataclass(frozen=True)
class PluginField:
    """One field a creator reads: the field types it accepts, its length, the values it accepts."""

    name: str
    types: tuple[str, ...]
    length: int
    low: int
    high: int
    meaning: str


@dataclass(frozen=True)
class PluginInput:
    name: str
    types: tuple[str, ...]  # empty: the type of the input `same_as`
    same_as: str = ""


@dataclass(frozen=True)
class PluginCreator:
    name: str
    version: str
    namespace: str
    fields: tuple[PluginField, ...]  # all required: createPlugin fails without any of them
    inputs: tuple[PluginInput, ...]
    output_same_as: str  # the input whose type the output has


PLUGINS = {
    "StarDeformConv": PluginCreator(
        name="StarDeformConv",
        version="1",
        namespace="",
        fields=(PluginField("stride", types=("INT32", "INT64"), length=1, low=1, high=4096, meaning="the FPN level's stride"),),
        inputs=(PluginInput("features", FP32_FP16), PluginInput("bbox_init", ("FP32",)), PluginInput("weight", (), same_as="features")),
        output_same_as="features",
    )
}
