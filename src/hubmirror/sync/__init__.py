"""The sync job, as steps: selection → plan (free HEADs) → copy (within the pull budget) → record → prune →
report. `run_sync` (in `run`) runs them in order; each step lives in its own module:

* `stores`: the destination and the source stores (the Docker Hub one behind the pull budget), and the
  `Scope` a step works on: the whole destination, or one of its repositories;
* `selection`: the targets the selection names, and its doubts;
* `planning`: the selection step (`select_plan`: deferred work first) and the check step (`check_targets`),
  what stops prune, the tags that left the selection;
* `record`: what is written to the state, and the start of the copies (`start_copies`);
* `runner`: the work items copied, granted pulls in priority order (`copy_and_follow`);
* `prune`: what left the selection, deleted with every safeguard;
* `close`: the close of a run (`close_run`): prune, freshness, the report, the run record;
* `worker` and `claim`: on a PostgreSQL state, several processes share one run: each claims destination
  repositories under a lease and runs the same steps on each (the scope is the repository), the pulls taken
  from one shared quota; the last one closes the run;
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
