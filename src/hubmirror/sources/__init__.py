"""Tag sources beside the official-images library: any registry repository (``tags/list``) or Docker Hub
repository (its tags API), each with its own tag policies; see `SourceSpec` and `list_sources`."""

from ._hub import DEFAULT_HUB_API, ApiTags, HubApiError, HubApiThrottled, HubTagsAPI, TagImages
from ._listing import (
    HubTags,
    Listed,
    RegistryTags,
    SourceListing,
    SourceSpec,
    TagSource,
    list_sources,
    open_source,
)
from ._policy import ARTIFACT_TAG, Dropped, PolicyError, TagInfo, TagPolicy, artifact_subject
from ._semver import SemverRange, Version, parse_version

__all__ = [
    "ARTIFACT_TAG",
    "DEFAULT_HUB_API",
    "ApiTags",
    "Dropped",
    "HubApiError",
    "HubApiThrottled",
    "HubTags",
    "HubTagsAPI",
    "Listed",
    "PolicyError",
    "RegistryTags",
    "SemverRange",
    "SourceListing",
    "SourceSpec",
    "TagImages",
    "TagInfo",
    "TagPolicy",
    "TagSource",
    "Version",
    "artifact_subject",
    "list_sources",
    "open_source",
    "parse_version",
]
