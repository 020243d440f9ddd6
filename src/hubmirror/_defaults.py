"""Defaults shared by the library reader, the config and the command line (import-light on purpose)."""

from __future__ import annotations

from typing import Final

#: The official-images repository.
DEFAULT_LIBRARY: Final = "https://github.com/docker-library/official-images.git"
