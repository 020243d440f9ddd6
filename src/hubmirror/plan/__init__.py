"""Plan a sync without spending pulls: which destination tags exist, which are stale, what it costs.

1. *Targets* (`targets`): every destination tag the run should hold, from the official-images library (its
   tag groups, filtered), an explicit image list, or tag sources.
2. *Check* (`check`): a manifest HEAD per source tag (free on Docker Hub) and per destination tag, compared
   with what the state recorded — so an image rebuilt on the source with no change in git is caught. Each
   target gets one verdict: failed, up to date, adopted, conflict, or work.
3. *Items* (`estimate`): one work item per distinct source digest and destination repository; tags sharing
   that digest are written by the same item (content fetched once, the other tags retagged), each with its
   pull estimate.

A destination tag the state has no record of is *foreign*: with the source's content it is adopted (recorded
as not created by hubmirror, so prune never deletes it); with other content it is a *conflict*, left as it is
unless ``--overwrite``. A tag recorded with another platform selection is copied again.
"""

from .check import CHECK_CONCURRENCY, check
from .model import LAYOUTS, Affordable, Conflict, Layout, Plan, Target, UpToDate, WorkItem, selection_text
from .targets import dest_repository, library_targets, list_targets, read_image_list, source_targets

__all__ = [
    "CHECK_CONCURRENCY",
    "LAYOUTS",
    "Affordable",
    "Conflict",
    "Layout",
    "Plan",
    "Target",
    "UpToDate",
    "WorkItem",
    "check",
    "dest_repository",
    "library_targets",
    "list_targets",
    "read_image_list",
    "selection_text",
    "source_targets",
]
