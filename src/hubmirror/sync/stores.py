"""The stores a sync talks to: the `Destination` (a registry namespace or an OCI layout) and the
`Sources` (one store per source registry, the Docker Hub one behind the pull budget and content mirrors)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._errors import ConfigError, HubmirrorError
from ..budget import PullBudget
from ..config import SyncConfig
from ..plan import Layout
from ..reference import normalize_registry
from ..registry.options import ClientOptions
from ..registry.ratelimit import RateLimit
from ..store import PullGate, Store
from ..store.mirrored import SourceStats, mirror_options, source_stats, with_mirrors
from ..store.ocidir import OCILayoutStore
from ..store.registry import RegistryStore


@dataclass
class Destination:
    """Where the mirror lives: a registry namespace or an OCI layout directory."""

    store: Store
    namespace: str  # repository prefix inside the store ("" for an OCI layout)
    name: str  # as the user wrote it: 127.0.0.1:5000/mirror or oci:/srv/mirror
    layout: Layout = "flat"  # how source repositories are named inside the namespace

    @property
    def prefix(self) -> str:
        """The state's names of this destination's repositories all start with this (namespace included)."""
        return self.key(f"{self.namespace}/" if self.namespace else "")

    def repo(self, key: str) -> str:
        """The repository inside the store for a state name made by `key`."""
        return key[len(self.key("")) :]

    def key(self, repo: str) -> str:
        """The state's name for a destination repository: ``REGISTRY/NS/python`` or ``oci:PATH/python``."""
        if isinstance(self.store, OCILayoutStore):
            return f"{self.name}/{repo}"
        return f"{self.name.split('/', 1)[0]}/{repo}"


def open_destination(cfg: SyncConfig) -> Destination:
    """The destination store of *cfg* (``REGISTRY/NAMESPACE`` or ``oci:PATH``)."""
    if not cfg.dest:
        raise ConfigError("no destination: give --dest REGISTRY/NAMESPACE or --dest oci:PATH (or dest: in the config)")
    if cfg.dest.startswith("oci:"):
        path = Path(cfg.dest[4:])
        return Destination(OCILayoutStore(path), "", cfg.dest, cfg.layout)
    host, _, namespace = cfg.dest.partition("/")
    return Destination(registry_store(cfg, host), namespace.strip("/"), cfg.dest.rstrip("/"), cfg.layout)


async def probe_destination(dest: Destination) -> None:
    """Before any work: does the destination registry answer ``/v2/`` and accept the credentials (a token
    for them, or ``/v2/`` with Basic auth)? A `HubmirrorError` of one line if not, instead of a run whose
    every tag fails alike. (An ``oci:`` layout's directory is checked with the run's other outputs,
    `SyncConfig.check_outputs`.)"""
    if isinstance(dest.store, RegistryStore):
        try:
            await dest.store.client.check_login()
        except HubmirrorError as e:
            raise HubmirrorError(f"destination {dest.name}: {e}; nothing was done") from None


def registry_store(
    cfg: SyncConfig,
    host: str,
    *,
    pull_gate: PullGate | None = None,
    mirror: bool = False,
    rate: float | None = None,
) -> RegistryStore:
    host = normalize_registry(host)
    options = ClientOptions(credentials=cfg.resolve_credentials(host), tls=cfg.tls_for(host), rate=rate)
    return RegistryStore(host, mirror_options(options) if mirror else options, pull_gate=pull_gate)


class Sources:
    """One store per source registry, opened on first use.

    Only the Docker Hub source (``cfg.source``) gets the pull budget as its `PullGate`: its client asks
    the budget before every manifest GET it sends. Other registries of an image list are never deferred
    by the Hub's budget (their own 429s and ``Retry-After`` are still honoured by their clients).
    The source of docker.io content reads content by digest from its content mirrors first
    (`MirroredStore`); what they serve never goes through the gate.
    """

    def __init__(self, cfg: SyncConfig) -> None:
        self.cfg = cfg
        self.stores: dict[str, Store] = {}
        self.budget = PullBudget(
            self._hub_ratelimit,
            max_pulls=cfg.max_pulls,
            reserve=cfg.ratelimit.effective_reserve,
            wait=cfg.wait_for_quota,
            max_wait=cfg.ratelimit.max_wait if cfg.ratelimit.max_wait is not None else float("inf"),
        )

    def _hub_ratelimit(self) -> RateLimit | None:
        hub = self.stores.get(self.cfg.source)
        return hub.ratelimit if hub is not None else None

    def is_hub(self, registry: str) -> bool:
        """True for the registry whose pulls the budget counts (the configured source)."""
        return registry == self.cfg.source

    def __getitem__(self, registry: str) -> Store:
        if registry not in self.stores:
            if self.is_hub(registry):  # the pull budget, and a pace under Docker Hub's abuse limit
                store: Store = registry_store(self.cfg, registry, pull_gate=self.budget, rate=self.cfg.source_rate)
            else:
                store = registry_store(self.cfg, registry)
            if registry == self.cfg.source:
                store = with_mirrors(
                    store, self.cfg.source_mirrors, lambda host: registry_store(self.cfg, host, mirror=True)
                )
            self.stores[registry] = store
        return self.stores[registry]

    def source_stats(self) -> list[SourceStats]:
        """Per source of content (each registry read from, each content mirror): what it served."""
        return [s for store in self.stores.values() for s in source_stats(store)]

    async def close(self) -> None:
        for s in self.stores.values():
            await s.close()


__all__ = ["Destination", "Sources", "open_destination", "probe_destination", "registry_store"]
