"""Stores: places images live. The copier talks only to the `Store` protocol.

Two implementations: `RegistryStore` (an OCI distribution registry) and `OCILayoutStore`
(an OCI image-layout directory). `open_location` turns a location string into one.
"""

from ._base import BlobStream, PullGate, Store, TransferStats
from ._open import open_location
from .ocidir import OCILayoutStore

__all__ = ["BlobStream", "OCILayoutStore", "PullGate", "Store", "TransferStats", "open_location"]
