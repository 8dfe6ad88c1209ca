"""ONNX export of trained StreamSense models, after Hugging Face optimum's exporters (needs the `train` extra)."""

from streamsense.exporters.config import UnsupportedArchitectureError, export_config_for
from streamsense.exporters.onnx import export
from streamsense.exporters.parity import ParityError, Tolerance, check_parity

__all__ = ["ParityError", "Tolerance", "UnsupportedArchitectureError", "check_parity", "export", "export_config_for"]
