"""The stores a sync talks to: the `Destination` (a registry namespace or an OCI layout) and the
`Sources` (one store per source registry, the Docker Hub one behind the pull budget and content mirrors)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._errors import ConfigError, HubmirrorError
from ..budget import PullBudget
from ..config import DEFAULT_SOURCE, SyncConfig
from ..plan import Layout
from ..plan.estimate import TagImagesLookup, hub_tag_images
from ..reference import normalize_registry
from ..registry.options import ClientOptions
from ..registry.ratelimit import RateLimit
from ..sources import DEFAULT_HUB_API, HubTagsAPI
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


@dataclass(frozen=True)
class Scope:
    """What a step of the run works on: the whole destination (the single process), or one of its
    repositories, a worker's unit (*unit*: its state name). The steps (`hubmirror.sync.planning.check_targets`,
    `hubmirror.sync.record.start_copies`, `hubmirror.sync.runner.copy_and_follow`) take it, so that one
    process and a worker go through the same code."""

    dest: Destination
    unit: str | None = None

    @property
    def prefix(self) -> str:
        """The state's names of the scope's repositories all start with this."""
        return self.dest.prefix if self.unit is None else self.unit

    @property
    def name(self) -> str:
        """The scope as a row of the report names it: the destination, or the repository."""
        return self.dest.name if self.unit is None else self.unit

    def key(self, repo: str) -> str:
        """`Destination.key`, and ``""`` → `prefix` (what the state is read for: the scope only)."""
        return self.dest.key(repo) if repo else self.prefix

    def holds(self, key: str) -> bool:
        """Is the repository the state names *key* in the scope?"""
        return key.startswith(self.dest.prefix) if self.unit is None else key == self.unit


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
        self._hub_api: HubTagsAPI | None = None
        self._tag_images: TagImagesLookup | None = None
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

    def tag_images(self) -> TagImagesLookup | None:
        """Docker Hub's tags API, which tells the pull estimate how many images an image list's entries have
        (no pull): for a run that reads an image list from Docker Hub, or whose --hub-api names one for the
        source (an emulator, a proxy); else None. One client and one lookup a run (every check of a worker's
        repositories asks the same: after its first failure it is not asked again)."""
        cfg = self.cfg
        hub_source = normalize_registry(cfg.source) == DEFAULT_SOURCE or cfg.hub_api != DEFAULT_HUB_API
        if self._tag_images is None and cfg.hub_api and hub_source and cfg.list_file is not None:
            self._hub_api = HubTagsAPI(cfg.hub_api)
            self._tag_images = hub_tag_images(self._hub_api, cfg.source)
        return self._tag_images

    def source_stats(self) -> list[SourceStats]:
        """Per source of content (each registry read from, each content mirror): what it served."""
        return [s for store in self.stores.values() for s in source_stats(store)]

    async def close(self) -> None:
        for s in self.stores.values():
            await s.close()
        if self._hub_api is not None:
            await self._hub_api.close()


__all__ = ["Destination", "Scope", "Sources", "open_destination", "probe_destination", "registry_store"]
