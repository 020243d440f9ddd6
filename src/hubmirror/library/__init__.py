"""The official-images library: parse library files, read their git history, diff commits, filter tags.

Typical use::

    source = await LibrarySource.open("https://github.com/docker-library/official-images.git")
    lib = await load_library(source)              # tip of the default branch
    for group in LibraryFilter.build(images=["python"]).apply(lib.tag_groups()):
        ...
    changes = await diff_library(source, old_commit, lib.commit)
"""

from ._diff import GroupChange, LibraryDiff, diff_library, diff_parsed, diff_repository
from ._filters import LibraryFilter, normalize_image_name, read_images_file
from ._git import DEFAULT_SOURCE, FileChange, LibrarySource, TreeFile, default_cache_dir
from ._load import ParseCache, load_library
from ._model import (
    ARCH_FIELDS,
    ARCHITECTURES,
    Entry,
    Library,
    LibraryStats,
    ParseWarning,
    Repository,
    TagGroup,
)
from ._parser import is_image_file, parse_2822, parse_library_file, parse_line_based

__all__ = [
    "ARCHITECTURES",
    "ARCH_FIELDS",
    "DEFAULT_SOURCE",
    "Entry",
    "FileChange",
    "GroupChange",
    "Library",
    "LibraryDiff",
    "LibraryFilter",
    "LibrarySource",
    "LibraryStats",
    "ParseCache",
    "ParseWarning",
    "Repository",
    "TagGroup",
    "TreeFile",
    "default_cache_dir",
    "diff_library",
    "diff_parsed",
    "diff_repository",
    "is_image_file",
    "load_library",
    "normalize_image_name",
    "parse_2822",
    "parse_library_file",
    "parse_line_based",
    "read_images_file",
]
