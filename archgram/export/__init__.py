"""Export a searched architecture as a self-contained folder: plain-PyTorch
model.py, safetensors weights, torch.export and ONNX programs, the derivation
and a model card.

    archgram.export("runs/digits.db", "best/")            # the best trial
    archgram.export("runs/digits.db", "t3/", trial=3)      # a chosen trial
"""
from __future__ import annotations

from typing import Any

from archgram.errors import ExportError

__all__ = ["ExportError", "ExportResult", "export"]


def export(study, out=None, **kwargs: Any):
    """See :func:`archgram.export.exporter.export`."""
    from archgram.export.exporter import export as _export

    return _export(study, out, **kwargs)


def __getattr__(name: str):
    if name == "ExportResult":
        from archgram.export.exporter import ExportResult

        return ExportResult
    raise AttributeError(name)
