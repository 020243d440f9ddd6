"""The sync job, as steps: selection → plan (free HEADs) → copy (within the pull budget) → record → prune →
report. `run_sync` (in `run`) runs them in order; each step lives in its own module:

* `stores`: the destination and the source stores (the Docker Hub one behind the pull budget);
* `selection`: the targets the selection names, and its doubts;
* `planning`: the targets checked, deferred work first, the tags that left the selection;
* `runner`: the work items copied, granted pulls in priority order;
* `record`: what is written to the state;
* `prune`: what left the selection, deleted with every safeguard;
* `worker` and `claim`: on a PostgreSQL state, several processes share one run: each claims destination
  repositories under a lease and runs the steps above on them, the pulls taken from one shared quota;
* `reporting`: the report's events; `events`: progress callbacks and the stop control.
"""

from .events import ItemBytes, RunControl, SyncEvents
from .planning import build_plan
from .prune import MAX_DELETE_SHARE, max_delete_default, prune, prune_refusals
from .run import run_sync
from .stores import Destination, Sources, open_destination

__all__ = [
    "MAX_DELETE_SHARE",
    "Destination",
    "ItemBytes",
    "RunControl",
    "Sources",
    "SyncEvents",
    "build_plan",
    "max_delete_default",
    "open_destination",
    "prune",
    "prune_refusals",
    "run_sync",
]
