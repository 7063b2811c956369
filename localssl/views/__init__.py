"""The *views* axis: how positive and negative samples are made (modules register by name)."""

from localssl.views.base import Normalize, ViewBatch

__all__ = ["Normalize", "ViewBatch"]
