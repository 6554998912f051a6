"""vfnet.export: ONNX export (and, later, TensorRT engines). Depends on vfnet.model; nothing imports it
at serving time."""

from .onnx_export import ExportSummary, export_onnx

__all__ = ["ExportSummary", "export_onnx"]
