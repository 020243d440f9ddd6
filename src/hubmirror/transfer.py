"""Transfer counters (`TransferStats`) and the `PullGate`: core types below the registry client and the stores
(the client counts what it sends and asks the gate before every manifest GET; it never imports the store)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol


@dataclass
class TransferStats:
    """What a store was asked to do; the sync and `copy --json` report these."""

    manifest_gets: int = 0  # the requests Docker Hub counts as pulls
    manifest_heads: int = 0
    manifest_puts: int = 0
    blob_heads: int = 0
    blob_gets: int = 0
    blob_bytes_read: int = 0
    blob_uploads: int = 0
    blob_bytes_written: int = 0
    blob_mounts: int = 0
    retries: int = 0
    #: 429s that were not the pull quota (Docker Hub's abuse limit on all requests), each backed off and
    #: retried: more than a few mean the pace (``--hub-rate``) is too fast.
    abuse_backoffs: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class PullGate(Protocol):
    """Permission to send a manifest GET (a Docker Hub "pull"), asked right before the request goes out.

    A `RegistryStore` given a gate asks it before every manifest GET it sends (a HEAD that falls back
    to GET included, and each retry of one: every GET on the wire may be a pull);
    `hubmirror.budget.PullBudget` is the one the sync gives to the Docker Hub source.
    """

    async def acquire(self, n: int = 1) -> None:
        """Take *n* pulls (waiting if the gate allows), or raise `hubmirror.BudgetExhausted`."""
        ...


__all__ = ["PullGate", "TransferStats"]
