"""Stores: places images live. The copier talks only to the `Store` protocol.

Two implementations: `RegistryStore` (an OCI distribution registry) and `OCILayoutStore`
(an OCI image-layout directory). `open_location` turns a location string into one. `MirroredStore`
wraps a source store so that its content by digest comes from content mirrors first (`with_mirrors`
builds one from ``REGISTRY[/PREFIX]`` names).
"""

from ..transfer import PullGate, TransferStats
from ._base import BlobStream, Store
from ._open import open_location
from .mirrored import ContentMirror, MirroredStore, SourceStats, with_mirrors
from .ocidir import OCILayoutStore

__all__ = [
    "BlobStream",
    "ContentMirror",
    "MirroredStore",
    "OCILayoutStore",
    "PullGate",
    "SourceStats",
    "Store",
    "TransferStats",
    "open_location",
    "with_mirrors",
]
