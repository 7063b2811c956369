"""Datasets as uint8 tensors (readers for the official formats) and their paper settings."""

from localssl.data.base import DatasetError, ImageData
from localssl.data.catalog import DATASETS, DatasetInfo, data_info, dataset_info, load_split
from localssl.data.manifest import check_manifest, dataset_manifest

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetInfo",
    "ImageData",
    "check_manifest",
    "data_info",
    "dataset_info",
    "dataset_manifest",
    "load_split",
]
