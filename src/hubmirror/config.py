"""The sync's configuration: a YAML file (``--config FILE``) validated by pydantic, overridden by CLI flags.

Every ``hubmirror sync`` flag has a key here (see ``examples/hubmirror.yaml``). Errors are `ConfigError`s
naming the file, the line and the key path (``hubmirror.yaml:12: ratelimit.reserve: must be ≥ 0``).
Secrets never appear in the file: credentials are references (an auth file, a credential helper, or the
names of environment variables), and a ``password`` key is rejected.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._defaults import DEFAULT_LIBRARY
from ._errors import ConfigError, CredentialsError, HubmirrorError
from ._fs import output_problem
from .platform import Platform
from .reference import normalize_registry
from .registry import credentials as _creds
from .registry.tls import TLSSettings, tls_for
from .sources import DEFAULT_HUB_API, SemverRange, SourceSpec

DEFAULT_SOURCE: Final = "docker.io"
#: Requests per second to Docker Hub at most, unless ``hub_rate`` says otherwise: well under its abuse limit.
DEFAULT_HUB_RATE: Final = 20.0

#: Keys under ``credentials.<registry>`` that would hold a secret inline; always rejected.
SECRET_KEYS: Final = ("password", "token", "identitytoken", "auth", "secret")

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")
#: A job's name (``job:``, ``--job``). A default job identity (`SyncConfig.job_id`) always has a ``=``, so a
#: name never collides with one.
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")

# Keys whose scalars are always text, even when YAML would read them as numbers or dates
# (``commit: 0123456`` must not become an octal int; ``include_tags: [1.0]`` is the regex "1.0").
# For the list keys this applies to the items only: ``images: 5`` is not a list and stays an error.
_TEXT_SCALARS: Final = frozenset({"library", "commit", "source", "dest", "schedule", "semver", "job"})
_TEXT_LISTS: Final = frozenset(
    {"images", "platforms", "include_tags", "exclude_tags", "insecure", "repos", "immutable", "content_mirrors"}
)
# Inside each `sources:` entry: its names and semver range, and the items of its regex/platform lists.
_SOURCE_TEXT_SCALARS: Final = frozenset({"repo", "registry", "hub", "semver"})
_SOURCE_TEXT_LISTS: Final = frozenset({"include", "exclude", "immutable", "platforms"})


def default_state_path() -> Path:
    """``$XDG_STATE_HOME/hubmirror/state.db`` (``~/.local/state/hubmirror/state.db`` if unset)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hubmirror" / "state.db"


def parse_duration(value: object) -> float | None:
    """Seconds from a number or ``90s``, ``15m``, ``6h``, ``1h30m``, ``2d``; None stays None."""
    if value is None or isinstance(value, bool):
        if isinstance(value, bool):
            raise ValueError("expected a duration like 90s, 15m, 6h or a number of seconds")
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        m = _DURATION.match(text)
        if text and m and any(m.groups()):
            d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            return d * 86400 + h * 3600 + mi * 60 + s
        try:
            return float(text)
        except ValueError:
            pass
    raise ValueError("expected a duration like 90s, 15m, 6h or a number of seconds")


def _as_list(value: object) -> object:
    """Let a single string stand for a one-item list: documented for ``platforms: linux/amd64`` only."""
    return [value] if isinstance(value, str) else value


def _a_list(value: object) -> object:
    """A list key given a single value: say what to write instead of pydantic's bare "valid list"."""
    if isinstance(value, str | int | float | bool):
        example = value if isinstance(value, str) and value.isprintable() else repr(value)
        raise ValueError(f"expected a list, e.g. [{example}] (got {value!r})")
    return value


def _path_text(value: object) -> object:
    """A path is text in the file (or a `Path` from a flag); a number or a list is a mistake."""
    if isinstance(value, Path):
        return value
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("expected a path, got an empty string")
        return Path(value)
    raise ValueError(f"expected a path (text), got {_kind(value)} {value!r}")


def _kind(value: object) -> str:
    return {str: "text", bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )


def _check_host(value: str) -> str:
    if not _HOST.match(value):
        raise ValueError(f"{value!r} is not a registry host (expected HOST or HOST:PORT, no scheme)")
    host, colon, port = value.rpartition(":")
    if colon and port.isdigit() and not host.endswith(":") and not 0 < int(port) <= 65535:
        raise ValueError(f"{value!r}: port {port} is out of range (1-65535)")
    return value


def _check_registry_path(value: str, what: str) -> str:
    """``HOST[/NAMESPACE...]``: the host validated, the rest as repository path components."""
    if _URL_SCHEME.match(value):
        raise ValueError(f"{value!r}: give {what} without a scheme (use `insecure:` for plain-HTTP registries)")
    host, _, rest = value.strip("/").partition("/")
    _check_host(host)
    for part in rest.split("/") if rest else []:
        if not _PATH_COMPONENT.match(part):
            raise ValueError(f"{value!r}: {part!r} is not a valid repository path component (lowercase, digits, ._-)")
    return value.strip("/")


def _image_pattern(item: str) -> str:
    if not re.fullmatch(r"[a-z0-9*?\[\]!][a-z0-9._*?\[\]!/-]*", item):
        raise ValueError(f"{item!r} is not an image name or glob (e.g. python, node, *-alpine)")
    return item


def _platform(item: str) -> str:
    try:
        return str(Platform.parse(item))
    except HubmirrorError as e:
        raise ValueError(str(e)) from None


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None
    return pattern


def _host(value: str) -> str:
    return _check_host(value.strip())


#: The keys of a ``content_mirrors`` mapping entry (the same options as after the commas of the text form).
_MIRROR_KEYS: Final = ("mirror", "rate", "stall_timeout", "min_speed")


def _mirror_entry(value: object) -> object:
    """A ``content_mirrors`` entry given as a mapping (``{mirror: public.ecr.aws/docker, rate: 1}``) → its
    text form (``public.ecr.aws/docker,rate=1``), which ``--content-mirror`` takes as well."""
    if not isinstance(value, dict):
        return value
    unknown = sorted(str(k) for k in value if k not in _MIRROR_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (a content mirror takes {', '.join(_MIRROR_KEYS)})")
    name = value.get("mirror")
    if not isinstance(name, str) or not name.strip() or "," in name:
        raise ValueError("a content mirror given as a mapping needs mirror: REGISTRY[/PREFIX]")
    parts = [name.strip()]
    for key in _MIRROR_KEYS[1:]:
        option = value.get(key)
        if option is None:
            continue
        if isinstance(option, bool) or not isinstance(option, int | float | str) or "," in str(option):
            raise ValueError(f"{key}: expected a number or text like 20s or 64k, got {option!r}")
        parts.append(f"{key}={option}")
    return ",".join(parts)


def _mirror(value: str) -> str:
    """``REGISTRY[/PREFIX][,rate=N][,stall_timeout=SECONDS][,min_speed=BYTES]``, checked and normalised."""
    from .store.mirrored import MirrorSpec

    spec = MirrorSpec.parse(value)
    what = "a content mirror (REGISTRY[/PREFIX][,rate=N][,stall_timeout=SECONDS][,min_speed=BYTES])"
    host, sep, rest = _check_registry_path(spec.name, what).partition("/")
    return str(spec.with_name(normalize_registry(host) + sep + rest))


def _state_value(value: object) -> object:
    """``state:``: a path or ``sqlite:///PATH`` (a `Path`), or a ``postgresql://`` URL (text); any other
    ``SCHEME://`` is refused, never taken for a file name."""
    from .state import StateLocation  # the state module loads no database driver at import

    if isinstance(value, Path):
        return value
    if not isinstance(value, str):
        return _path_text(value)
    if not value.strip():
        raise ValueError("expected a path or a postgresql:// URL, got an empty string")
    try:
        location = StateLocation.parse(value)
    except HubmirrorError as e:
        raise ValueError(str(e)) from None
    return location.path if location.path is not None else value.strip()


ImageList = Annotated[list[Annotated[str, AfterValidator(_image_pattern)]], BeforeValidator(_a_list)]
PlatformList = Annotated[list[Annotated[str, AfterValidator(_platform)]], BeforeValidator(_as_list)]
RegexList = Annotated[list[Annotated[str, AfterValidator(_regex)]], BeforeValidator(_a_list)]
HostList = Annotated[list[Annotated[str, AfterValidator(_host)]], BeforeValidator(_a_list)]
Host = Annotated[str, AfterValidator(_host)]
MirrorList = Annotated[
    list[Annotated[str, BeforeValidator(_mirror_entry), AfterValidator(_mirror)]], BeforeValidator(_a_list)
]
Seconds = Annotated[float | None, BeforeValidator(parse_duration)]
#: A filesystem path: text in the file, a `Path` from a flag (strict mode would refuse the text).
PathValue = Annotated[Path, BeforeValidator(_path_text)]
#: The state: a SQLite path, or a PostgreSQL URL (`_state_value`).
StateValue = Annotated[Path | str, BeforeValidator(_state_value)]


class _Model(BaseModel):
    # strict: no coercion. ``concurrency: 2.0``, ``prune: 'yes'`` or ``max_pulls: "10"`` are errors, not
    # silently 2, True and 10 (values from flags arrive already typed by typer).
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True, strict=True)


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Expand ``~`` and ``$VARS``; a relative path in a config file is relative to that file's directory."""
    if value is None:
        return None
    p = Path(os.path.expandvars(os.path.expanduser(str(value))))
    if not p.is_absolute():
        base = (info.context or {}).get("base_dir")
        p = (Path(base) if base else Path.cwd()) / p
    return p


class Credential(_Model):
    """Where to find the credentials for one registry; never the secret itself.

    Exactly one of: ``authfile`` (a docker ``config.json`` or containers ``auth.json``), ``helper``
    (``docker-credential-<helper>``), or ``username_env`` + ``password_env`` (environment variable names).
    """

    authfile: PathValue | None = None  # a docker config.json or containers auth.json holding this registry's login
    helper: str | None = None  # NAME of a credential helper: docker-credential-NAME is run
    username_env: str | None = None  # the environment variable holding the user name
    password_env: str | None = None  # the environment variable holding the password or token
    # Declared only to reject them with a clear message (and the right line number).
    password: Any = Field(default=None, exclude=True, repr=False)
    token: Any = Field(default=None, exclude=True, repr=False)
    identitytoken: Any = Field(default=None, exclude=True, repr=False)
    auth: Any = Field(default=None, exclude=True, repr=False)
    secret: Any = Field(default=None, exclude=True, repr=False)

    @field_validator(*SECRET_KEYS, mode="before")
    @classmethod
    def _no_inline_secret(cls, value: object, info: ValidationInfo) -> None:
        if value is not None:
            raise ValueError(
                f"inline secrets are not allowed in the config file; remove `{info.field_name}` and use "
                "password_env: VAR (an environment variable name), authfile: PATH or helper: NAME"
            )
        return None

    @field_validator("authfile")
    @classmethod
    def _authfile(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info)

    @field_validator("helper")
    @classmethod
    def _helper_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError(f"{value!r} is not a credential helper name (docker-credential-NAME is run)")
        return value

    @field_validator("username_env", "password_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    def resolve(self, registry: str, environ: Mapping[str, str] | None = None) -> _creds.Credentials | None:
        """Read the credentials this entry points at; None if the auth file or helper has none for *registry*.

        Raises `CredentialsError` naming the missing environment variable (never its value)."""
        where = f"config credentials.{registry}"
        if self.authfile is not None:
            found = _creds.from_authfile(registry, self.authfile)
            return None if found is None else replace(found, source=f"{where} ({found.source})")
        if self.helper is not None:
            found = _creds.from_helper(self.helper, registry)
            return None if found is None else replace(found, source=f"{where} ({found.source})")
        env = os.environ if environ is None else environ
        assert self.username_env is not None and self.password_env is not None
        missing = [v for v in (self.username_env, self.password_env) if not env.get(v)]
        if missing:
            raise CredentialsError(
                f"credentials for {registry}: environment variable {' and '.join(missing)} is not set or empty"
            )
        return _creds.Credentials(
            env[self.username_env], env[self.password_env], f"{where} (environment {self.password_env})"
        )

    @model_validator(mode="after")
    def _one_kind(self) -> Credential:
        kinds = [self.authfile is not None, self.helper is not None]
        env = (self.username_env is not None, self.password_env is not None)
        if env == (True, False) or env == (False, True):
            raise ValueError("username_env and password_env go together")
        kinds.append(all(env))
        if sum(kinds) != 1:
            raise ValueError("give exactly one of: authfile, helper, or username_env + password_env")
        return self


class TLSEntry(_Model):
    """``tls: {REGISTRY: {ca_file:, cert_file:, key_file:, insecure:}}``: how to reach one registry over TLS,
    for every request to it (token requests to its auth server included)."""

    ca_file: PathValue | None = None  # a CA certificate (PEM) trusted for this registry, besides the system's
    cert_file: PathValue | None = None  # a client certificate (PEM) for mutual TLS
    key_file: PathValue | None = None  # the client certificate's key, if not in cert_file
    insecure: bool | None = None  # true: HTTPS unverified, then plain HTTP; false: verified HTTPS only

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info)

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TLSEntry:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate)")
        return self

    def settings(self) -> TLSSettings:
        return TLSSettings(self.ca_file, self.cert_file, self.key_file, self.insecure)


class RateLimitConfig(_Model):
    """How to spend Docker Hub's pull quota (reference §C.7)."""

    reserve: int = Field(default=5, ge=0)  # pulls of the quota never spent (left for people and other tools)
    min_remaining: int | None = Field(default=None, ge=0)  # the same as reserve (the larger of the two counts)
    wait: bool = False  # when the quota is spent, wait for the window to refill instead of deferring
    max_wait: Seconds = Field(default=21600.0, ge=0)  # wait at most this long (90s, 15m, 6h or seconds)
    #: The key of the pull quota workers on one PostgreSQL state share (default: the source and the account
    #: it is read with). Anonymous limits are per egress IP: workers behind different egresses give each
    #: egress its own key.
    quota_key: str | None = Field(default=None, min_length=1)

    @property
    def effective_reserve(self) -> int:
        """Pulls never spent: the larger of ``reserve`` and ``min_remaining``."""
        return max(self.reserve, self.min_remaining or 0)


def _semver(value: str | None) -> str | None:
    if value is not None:
        try:
            SemverRange.parse(value)
        except HubmirrorError as e:
            raise ValueError(str(e)) from None
    return value


SemverText = Annotated[str | None, AfterValidator(_semver)]


class SourceEntry(_Model):
    """One ``sources:`` entry: exactly one of ``repo`` (``REGISTRY/REPO``; docker.io names use Docker Hub's
    tags API where it answers), ``registry`` (always the registry's ``tags/list``) or ``hub``
    (``NAMESPACE/REPO`` on Docker Hub, tags API), with this source's own policies."""

    repo: str | None = None  # REGISTRY/REPO; docker.io names are listed with Docker Hub's tags API where it answers
    registry: str | None = None  # REGISTRY/REPO, always listed with the registry's tags/list (and a free HEAD per tag)
    hub: str | None = None  # NAMESPACE/REPO on Docker Hub, listed with its tags API (tags/list if that fails)
    include: RegexList = Field(default_factory=list)  # whole-tag regexes: keep only tags matching one
    exclude: RegexList = Field(default_factory=list)  # whole-tag regexes: drop tags matching one
    semver: SemverText = None  # a version range of tags, e.g. '>=1.27 <2', '~1.4', '^2', '1.x'
    prerelease: bool = False  # let pre-release tags (-rc1, -beta2, …) pass the semver policy
    keep: int | None = Field(default=None, ge=1)  # keep the newest N tags
    keep_by: Literal["semver", "pushed"] | None = None  # what "newest" means for keep (default: see tag sources)
    platforms: PlatformList = Field(default_factory=list)  # platforms to keep (OS/ARCH[/VARIANT]); default all
    immutable: RegexList = Field(default_factory=list)  # tags that never move: checked once, then not requested
    signatures: bool | None = None  # copy this source's signatures and referrers (default: the top-level key)

    @model_validator(mode="after")
    def _one_kind(self) -> SourceEntry:
        given = [k for k in ("repo", "registry", "hub") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of: repo, registry, hub")
        self.spec(True)  # validates the name (and immutable on official images)
        return self

    def spec(self, signatures: bool) -> SourceSpec:
        kind: Literal["repo", "registry", "hub"] = "repo" if self.repo else "registry" if self.registry else "hub"
        name = self.repo or self.registry or self.hub or ""
        try:
            return SourceSpec.parse(
                kind,
                name,
                include=tuple(self.include),
                exclude=tuple(self.exclude),
                semver=self.semver,
                prerelease=self.prerelease,
                keep=self.keep,
                keep_by=self.keep_by,
                platforms=tuple(Platform.parse(p) for p in self.platforms),
                immutable=tuple(self.immutable),
                signatures=signatures if self.signatures is None else self.signatures,
            )
        except HubmirrorError as e:
            raise ValueError(str(e)) from None


class UsageError(ConfigError):
    """A mistake on the command line itself (a flag's value, flags that contradict each other): the shell
    gets exit status 2, as for an unknown flag. A config file's mistakes stay `ConfigError` (status 1)."""


NotifyEvent = Literal["failure", "recovery", "slo_breach", "deferred", "success"]
_DEFAULT_NOTIFY: Final[tuple[NotifyEvent, ...]] = ("failure", "recovery", "slo_breach")


class NotifyEntry(_Model):
    """One ``notify:`` entry: a receiver of JSON POSTs (a Slack/Mattermost incoming webhook, any HTTP endpoint)
    and the events it gets (default: failure, recovery, slo_breach)."""

    url: str = Field(repr=False)
    events: list[NotifyEvent] = Field(default_factory=lambda: list(_DEFAULT_NOTIFY))

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value.strip()):
            raise ValueError("expected an http:// or https:// URL (the URL itself is not shown: it may hold a secret)")
        return value.strip()

    @field_validator("events")
    @classmethod
    def _some(cls, value: list[NotifyEvent]) -> list[NotifyEvent]:
        if not value:
            raise ValueError("an empty list would notify nothing: leave `events` out for the default")
        return value


class _Origin:
    """Where a config came from: the file name (*path*: its absolute path) and the line of each key path."""

    def __init__(self, file: str | None, lines: dict[tuple[str | int, ...], int], path: Path | None = None) -> None:
        self.file = file
        self.lines = lines
        self.path = path


class SyncConfig(_Model):
    """Everything ``hubmirror sync`` can be told; each field matches a CLI flag of the same name."""

    library: str = DEFAULT_LIBRARY
    commit: str | None = None
    images: ImageList = Field(default_factory=list)
    images_file: PathValue | None = None
    list_file: PathValue | None = Field(default=None, alias="list")
    source: str = DEFAULT_SOURCE
    #: Content mirrors (``REGISTRY[/PREFIX]``) for the source's content by digest; None: the defaults
    #: when the source is Docker Hub (mirror.gcr.io, public.ecr.aws/docker); ``[]``: none. An entry may
    #: carry its manners: ``REGISTRY[/PREFIX],rate=N,stall_timeout=S,min_speed=B`` or the mapping
    #: ``{mirror: REGISTRY[/PREFIX], rate: N, stall_timeout: S, min_speed: B}`` (`MirrorSpec`).
    content_mirrors: MirrorList | None = None
    dest: str | None = None
    layout: Literal["flat", "mirror"] = "flat"
    platforms: PlatformList = Field(default_factory=list)
    windows: bool = False
    include_tags: RegexList = Field(default_factory=list)
    exclude_tags: RegexList = Field(default_factory=list)
    #: A SQLite path (or ``sqlite:///PATH``) or a ``postgresql://USER@HOST:PORT/DB`` URL.
    state: StateValue = Field(default_factory=default_state_path)
    report: PathValue | None = None
    dry_run: bool = False
    max_pulls: int | None = Field(default=None, ge=0)
    wait: bool | None = None
    #: Requests per second to the Docker Hub source at most (its abuse limit is "thousands per minute"
    #: for every request, HEADs included); 0: not paced. Unset: `DEFAULT_HUB_RATE` when the source is
    #: Docker Hub itself, unpaced for any other source (a pull-through cache, a company mirror).
    hub_rate: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    prune: bool = False
    max_delete: int | None = Field(default=None, ge=0)
    overwrite: bool = False
    concurrency: int = Field(default=8, ge=1, le=64)
    blob_concurrency: int = Field(default=4, ge=1, le=64)  # blobs copied in parallel within one image
    insecure: HostList = Field(default_factory=list)
    schedule: str | None = None  # cron expression for sync --daemon and serve, e.g. '17 */6 * * *'
    metrics_file: PathValue | None = None
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_addr: str = "127.0.0.1"  # the address sync --daemon serves /metrics on (with metrics_port)
    credentials: dict[Host, Credential] = Field(default_factory=dict)
    tls: dict[Host, TLSEntry] = Field(default_factory=dict)
    ratelimit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    # Tag sources: `sources:` entries, and the ad-hoc form `--repo` (which takes the top-level
    # include/exclude/semver/keep/prerelease/immutable/platforms).
    sources: list[SourceEntry] = Field(default_factory=list)
    repos: Annotated[list[str], BeforeValidator(_as_list)] = Field(default_factory=list)
    semver: SemverText = None
    prerelease: bool = False
    keep: int | None = Field(default=None, ge=1)
    immutable: RegexList = Field(default_factory=list)
    hub_api: str | None = DEFAULT_HUB_API  # Docker Hub's tags API; null: always tags/list + HEADs
    signatures: bool = True  # signatures, attestations and referrers follow their images
    #: Receivers of run notifications (`hubmirror.notify`).
    notify: list[NotifyEntry] = Field(default_factory=list)
    #: How long a change may wait to reach the mirror before it breaks the freshness objective (``6h``).
    freshness_slo: Seconds = Field(default=None, gt=0)
    #: Workers on one PostgreSQL state: how long a claimed repository stays a worker's without a heartbeat
    #: (renewed every third of it); a worker that dies loses its repositories after this long.
    lease: Seconds = Field(default=30.0, gt=0, le=60)
    #: The job's name: prune deletes only the tags of the running job (several jobs may share a state and a
    #: destination). None: `job_id` names the job by where its selection is defined.
    job: str | None = None

    _origin: _Origin | None = PrivateAttr(None)
    #: Top-level keys given on the command line (`merge`), over those of the config file.
    _cli_keys: frozenset[str] = PrivateAttr(frozenset())
    _only: frozenset[str] | None = PrivateAttr(None)

    # ------------------------------------------------------------------ validators

    @field_validator("images_file", "list_file", "report", "metrics_file")
    @classmethod
    def _paths(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info)

    @field_validator("state")
    @classmethod
    def _state(cls, value: Path | str, info: ValidationInfo) -> Path | str:
        """A SQLite path is resolved like any path; a PostgreSQL URL stays as written."""
        if isinstance(value, Path):
            resolved = _resolve_path(value, info)
            assert resolved is not None
            return resolved
        return value

    @field_validator("library")
    @classmethod
    def _library(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        if _URL_SCHEME.match(value) or _SCP_LIKE.match(value):
            return value
        return str(_resolve_path(Path(value), info))

    @field_validator("commit")
    @classmethod
    def _commit(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c.isspace() for c in value)):
            raise ValueError(f"{value!r} is not a commit (a hash or ref name without spaces)")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        value = _check_registry_path(value.strip(), "the source registry")
        return normalize_registry(value)

    @field_validator("dest")
    @classmethod
    def _dest(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value.startswith("oci:"):
            rest = value[4:]
            if not rest:
                raise ValueError("oci: needs a directory, e.g. oci:/srv/mirror")
            return "oci:" + str(_resolve_path(Path(rest), info))
        return _check_registry_path(value, "the destination (REGISTRY/NAMESPACE or oci:PATH)")

    @field_validator("job")
    @classmethod
    def _job(cls, value: str | None) -> str | None:
        if value is not None and not _JOB_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a job name (letters, digits, '.', '_' and '-', starting with a letter or digit, "
                "at most 100)"
            )
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from croniter import croniter  # only a config with a schedule needs it (start-up of a one-shot sync)

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression (e.g. '17 */6 * * *')")
        return value

    @field_validator("credentials")
    @classmethod
    def _credential_hosts(cls, value: dict[str, Credential]) -> dict[str, Credential]:
        return {normalize_registry(h): c for h, c in value.items()}

    @field_validator("tls")
    @classmethod
    def _tls_hosts(cls, value: dict[str, TLSEntry]) -> dict[str, TLSEntry]:
        return {normalize_registry(h): t for h, t in value.items()}

    # ------------------------------------------------------------------ helpers for the sync

    @property
    def wait_for_quota(self) -> bool:
        """Wait for the quota to recover instead of deferring: ``wait`` if given, else ``ratelimit.wait``."""
        return self.ratelimit.wait if self.wait is None else self.wait

    @property
    def reads_library(self) -> bool:
        """True unless only an image list (``list``) or tag sources (``sources``, ``repos``) were given:
        ``--list`` or ``--repo`` alone skips official-images."""
        only_others = self.list_file is not None or bool(self.sources or self.repos)
        return bool(self.images or self.images_file or not only_others)

    def tag_sources(self) -> list[SourceSpec]:
        """The tag sources: every ``sources:`` entry, then one per ``repos`` (``--repo``) entry."""
        specs = [s.spec(self.signatures) for s in self.sources]
        for name in self.repos:
            try:
                specs.append(
                    SourceSpec.parse(
                        "repo",
                        name,
                        include=tuple(self.include_tags),
                        exclude=tuple(self.exclude_tags),
                        semver=self.semver,
                        prerelease=self.prerelease,
                        keep=self.keep,
                        platforms=tuple(self.platform_list()),
                        immutable=tuple(self.immutable),
                        signatures=self.signatures,
                    )
                )
            except HubmirrorError as e:
                raise ConfigError(f"--repo {name}: {e}") from None
        return specs

    @property
    def job_id(self) -> str:
        """The job this config runs as: ``job`` when named, else an identity made of where its selection is
        defined: the config file's absolute path (when the selection comes from one), the image list's and
        the images file's absolute paths, the library with its ``images`` filter, the tag sources' names.
        Editing a file in place keeps the job; two list files are two jobs. Tag and platform filters are
        not part of it (changing them does not make another job)."""
        if self.job:
            return self.job
        origin = self._origin
        config = origin.path if origin is not None else None
        keys = self._cli_keys if config is not None else None  # None: every key defines the selection

        def given(*names: str) -> bool:
            return keys is None or any(n in keys for n in names)

        parts = [f"config={config}"] if config is not None else []
        if self.reads_library and given("library", "images", "images_file"):
            from .redact import redact_url  # the identity is stored and shown: never with a credential

            text = f"library={redact_url(self.library)}"
            images = sorted({i.strip() for i in self.images if i.strip()})
            if images:
                text += f" images={','.join(images)}"
            if self.images_file is not None:
                text += f" images-file={os.path.abspath(self.images_file)}"
            parts.append(text)
        if self.list_file is not None and given("list"):
            parts.append(f"list={os.path.abspath(self.list_file)}")
        if given("repos"):
            parts += [f"repo={name}" for name in sorted(set(self.repos))]
        if keys is None and self.sources:  # not from a file: a model built in code
            parts += sorted(f"source={s.repo or s.registry or s.hub}" for s in self.sources)
        return " ".join(parts) or "selection=default"

    def platform_list(self) -> list[Platform]:
        """The ``platforms`` as `Platform` objects (empty: every platform)."""
        return [Platform.parse(p) for p in self.platforms]

    def tag_selected(self, tag: str) -> bool:
        """True if *tag* fully matches one ``include_tags`` regex (or there are none) and no ``exclude_tags``."""
        if self.include_tags and not any(re.fullmatch(p, tag) for p in self.include_tags):
            return False
        return not any(re.fullmatch(p, tag) for p in self.exclude_tags)

    @property
    def only_repositories(self) -> frozenset[str] | None:
        """The repositories a run for chosen repositories checks and copies (`only`); None: the whole selection."""
        return self._only

    def only(self, repositories: Iterable[str]) -> SyncConfig:
        """This config for a run that checks and copies only *repositories* of its selection (a source
        repository's name, ``python`` or ``library/python``, or its destination repository): the same job
        (its identity pinned), and no prune (a partial selection is no reason to delete anything)."""
        new = self.model_copy(update={"job": self.job_id, "prune": False})
        new._origin = self._origin
        new._cli_keys = self._cli_keys
        new._only = frozenset(r.strip().strip("/") for r in repositories if r.strip())
        return new

    def without_content_mirrors(self) -> SyncConfig:
        """This config with content mirrors turned off (``--no-content-mirrors``)."""
        new = self.model_copy(update={"content_mirrors": []})
        new._origin = self._origin
        new._cli_keys = self._cli_keys
        return new

    @property
    def source_rate(self) -> float | None:
        """Requests per second to the source (None: unpaced): ``hub_rate`` if set, else `DEFAULT_HUB_RATE`
        when the source is Docker Hub itself."""
        if self.hub_rate is not None:
            return self.hub_rate or None
        return DEFAULT_HUB_RATE if normalize_registry(self.source) == DEFAULT_SOURCE else None

    @property
    def source_mirrors(self) -> list[str]:
        """The content mirrors of the source (``REGISTRY[/PREFIX]``): ``content_mirrors`` if set, else the
        defaults when the source is Docker Hub itself (a loopback emulator or a cache gets none)."""
        from .store.mirrored import content_mirrors_for

        return content_mirrors_for(self.source, self.content_mirrors)

    def credential_for(self, registry: str) -> Credential | None:
        """The credential reference for *registry* (Docker Hub's aliases all map to ``docker.io``)."""
        return self.credentials.get(normalize_registry(registry))

    def tls_for(self, registry: str) -> TLSSettings:
        """The ``tls:`` settings of *registry*, merged with ``insecure:`` (listed there: insecure)."""
        settings = tls_for({k: v.settings() for k, v in self.tls.items()}, registry)
        if normalize_registry(registry) in {normalize_registry(h) for h in self.insecure}:
            settings = dataclasses.replace(settings, insecure=True)
        return settings

    def resolve_credentials(self, registry: str, environ: Mapping[str, str] | None = None) -> _creds.Credentials | None:
        """Credentials for *registry*: its ``credentials:`` entry if the config has one, else the default
        lookup of `hubmirror.registry.credentials.resolve` (environment, then the docker auth file)."""
        ref = self.credential_for(registry)
        if ref is not None:
            return ref.resolve(registry, environ)
        return _creds.resolve(registry, environ=environ)

    def check_outputs(self) -> None:
        """Raise `ConfigError` if the state, report or metrics file (or an ``oci:`` destination) cannot be
        written, one line each.

        Called before a run does any work: a bad ``--report`` must not be found after the destination
        was changed."""
        problems = []
        for what, path in (
            ("state database", self.state if isinstance(self.state, Path) else None),
            ("report file", self.report),
            ("metrics file", self.metrics_file),
        ):
            problem = None if path is None else output_problem(path)
            if problem is not None:
                problems.append(f"{what} {path}: cannot be written: {problem}; nothing was done")
        if self.dest is not None and self.dest.startswith("oci:") and not self.dry_run:
            problem = output_problem(Path(self.dest[4:]), directory=True)
            if problem is not None:
                problems.append(f"destination {self.dest}: cannot be written: {problem}; nothing was done")
        if problems:
            raise ConfigError("\n".join(problems))

    # ------------------------------------------------------------------ loading and merging

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SyncConfig:
        """Read and validate a YAML config file; `ConfigError` names the file, line and key."""
        return load_config(path)

    def merge(self, cli: Mapping[str, Any]) -> SyncConfig:
        """A new config with CLI values laid over this one. None means "flag not given" and is ignored, as
        is an empty list (a repeatable flag given zero times). Keys may use dashes (``max-pulls``) and dots
        for nesting (``ratelimit.reserve``). Relative paths from the command line are relative to the
        current directory."""
        overrides: dict[str, Any] = {}
        cli_paths: set[tuple[str, ...]] = set()
        for key, value in cli.items():
            if value is None or (isinstance(value, list | tuple) and not value):
                continue
            parts = tuple(k.replace("-", "_") for k in key.split("."))
            if parts[0] == "list_file":
                parts = ("list", *parts[1:])
            cli_paths.add(parts)
            node = overrides
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = list(value) if isinstance(value, tuple) else value
        base = self.model_dump(by_alias=True, exclude_unset=True)
        merged = _deep_merge(base, overrides)
        origin = self._origin or _Origin(None, {})
        try:
            new = type(self).model_validate(merged, context={"base_dir": None})
        except ValidationError as e:
            text, from_cli = _format_errors(e, origin, cli_paths)
            raise (UsageError if from_cli else ConfigError)(text) from None
        new._origin = origin
        new._cli_keys = self._cli_keys | {p[0] for p in cli_paths}
        new.check_consistency(cli_paths)
        return new

    def check_consistency(self, cli_paths: Iterable[tuple[str, ...]] = ()) -> None:
        """Raise `ConfigError` (`UsageError` when a flag in *cli_paths* is involved), one line per problem,
        for settings that contradict each other or would silently do nothing: a `--repo` option without
        ``--repo``, ``--commit`` when no library is read, ``--wait`` with ``--max-pulls 0``, the
        destination named as its own content mirror."""
        flags = set(cli_paths)
        lines: list[tuple[int, str]] = []
        usage = False
        for keys, message in _contradictions(self):
            given = [k for k in keys if any(k[: len(p)] == p for p in flags)]
            if given:
                usage = True
                lines.append((0, f"option {_flag_name(given[0])}: {message}"))
                continue
            origin = self._origin or _Origin(None, {})
            line = next((origin.lines[k] for k in keys if k in origin.lines), None)
            where = origin.file or "<config>"
            key = _dotted(keys[0])
            lines.append((line or 0, f"{where}:{line}: {key}: {message}" if line else f"{where}: {key}: {message}"))
        if lines:
            text = "\n".join(_printable(t) for _, t in sorted(lines, key=lambda x: x[0]))
            raise (UsageError if usage else ConfigError)(text)


def _contradictions(cfg: SyncConfig) -> list[tuple[tuple[tuple[str | int, ...], ...], str]]:
    """(the keys involved, the first one named, and why) for each contradiction in *cfg*."""
    out: list[tuple[tuple[tuple[str | int, ...], ...], str]] = []
    if cfg.wait_for_quota and cfg.max_pulls == 0:
        wait_key: tuple[str, ...] = ("wait",) if cfg.wait is not None else ("ratelimit", "wait")
        out.append(
            (
                (("max_pulls",), wait_key),
                "0 pulls while waiting for the quota window (--wait): no window ever allows a pull, so the run "
                "would wait for nothing (ratelimit.max_wait, 6 h by default); give --max-pulls N above 0, or "
                "drop --wait (--max-pulls 0 alone defers every copy at once)",
            )
        )
    if not cfg.repos:
        for key, given in (
            ("keep", cfg.keep is not None),
            ("semver", cfg.semver is not None),
            ("prerelease", cfg.prerelease),
            ("immutable", bool(cfg.immutable)),
        ):
            if given:
                out.append(
                    (
                        ((key,), ("repos",)),
                        "applies to the tags of --repo (repos:) only, and none is given "
                        "(a sources: entry takes its own)",
                    )
                )
    if cfg.commit is not None and not cfg.reads_library:
        out.append(
            (
                (("commit",), ("list",)),
                "picks a commit of the official-images library, which is not read when only --list or "
                "--repo is given (add --images to read it)",
            )
        )
    if cfg.dest is not None and not cfg.dest.startswith("oci:"):
        dest = _registry_place(cfg.dest)
        for i, mirror in enumerate(cfg.content_mirrors or []):
            if _registry_place(mirror) == dest:
                out.append(
                    (
                        (("content_mirrors", i), ("dest",)),
                        f"the destination {cfg.dest} is also named as a content mirror ({mirror}): a mirror is "
                        "read for the content the destination lacks, so it cannot be the destination itself",
                    )
                )
    return out


def _registry_place(value: str) -> str:
    """``HOST[/PATH]`` normalised for comparison (Docker Hub's aliases, case of the host, slashes)."""
    host, sep, rest = value.strip().strip("/").partition("/")
    return normalize_registry(host.lower()) + sep + rest.strip("/")


def _flag_name(key: tuple[str | int, ...]) -> str:
    """``--max-pulls`` for ``("max_pulls",)``; ``--content-mirror (value 2)`` for ``("content_mirrors", 1)``."""
    name = str(key[0])
    flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
    if len(key) > 1 and isinstance(key[1], int):
        flag += f" (value {key[1] + 1})"
    elif len(key) > 1:
        flag = "--" + str(key[-1]).replace("_", "-")  # ratelimit.wait and the like: the flag of the leaf
    return flag


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: str | os.PathLike[str]) -> SyncConfig:
    """Read *path* (YAML), validate it, and return the config; raise `ConfigError` naming file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigError(f"{p}: cannot read config file: {reason}") from None
    cfg = parse_config(text, name=str(p), base_dir=p.resolve().parent)
    if cfg._origin is not None:
        cfg._origin.path = p.resolve()
    return cfg


def parse_config(text: str, *, name: str = "<config>", base_dir: Path | None = None) -> SyncConfig:
    """Validate config *text*; *name* is used in messages, *base_dir* anchors relative paths."""
    data, lines = _parse_yaml(text, name)
    origin = _Origin(name, lines)
    try:
        cfg = SyncConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        raise ConfigError(_format_errors(e, origin, set())[0]) from None
    cfg._origin = origin
    return cfg


# ---------------------------------------------------------------------------------------------- YAML


def _parse_yaml(text: str, name: str) -> tuple[dict[str, Any], dict[tuple[str | int, ...], int]]:
    """YAML → (data, line of every key path). Duplicate keys are errors, not silently last-wins."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as e:  # a control character: the reader refuses the text at once
        raise ConfigError(f"{name}: invalid YAML: {' '.join(str(e).split())}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        if not isinstance(node, yaml.MappingNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
            raise ConfigError(f"{name}:{node.start_mark.line + 1}: the config must be a mapping of keys, not {kind}")
        lines: dict[tuple[str | int, ...], int] = {(): node.start_mark.line + 1}
        data = _construct(loader, node, (), lines, name, _Guard())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{name}:{mark.line + 1}" if mark else name
        raise ConfigError(f"{where}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{name}: invalid YAML: {' '.join(str(e).split())}") from None
    finally:
        loader.dispose()
    assert isinstance(data, dict)
    return data, lines


#: At most this many values in one config file, aliases expanded: an "alias bomb" is an error, not a hang.
_MAX_NODES: Final = 100_000


class _Guard:
    """What `_construct` is in the middle of (recursive aliases) and how much it built (alias bombs)."""

    def __init__(self) -> None:
        self.active: set[int] = set()
        self.count = 0


def _construct(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: tuple[str | int, ...],
    lines: dict[tuple[str | int, ...], int],
    name: str,
    guard: _Guard,
) -> Any:
    where = f"{name}:{node.start_mark.line + 1}: {_dotted(path) or '(top level)'}"
    guard.count += 1
    if guard.count > _MAX_NODES:
        raise ConfigError(f"{where}: the file expands to more than {_MAX_NODES} values (YAML aliases?)")
    if id(node) in guard.active:
        raise ConfigError(f"{where}: a YAML alias that contains itself")
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        guard.active.add(id(node))
        try:
            return _construct_collection(loader, node, path, lines, name, guard)
        finally:
            guard.active.discard(id(node))
    value = loader.construct_object(node, deep=True)
    if (
        _is_text(path)
        and isinstance(node, yaml.ScalarNode)
        and value is not None
        and not isinstance(value, str)
        and node.tag.startswith("tag:yaml.org,2002:")
        and node.style is None
    ):
        return node.value
    return value


def _construct_collection(
    loader: yaml.SafeLoader,
    node: yaml.MappingNode | yaml.SequenceNode,
    path: tuple[str | int, ...],
    lines: dict[tuple[str | int, ...], int],
    name: str,
    guard: _Guard,
) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(
                    f"{name}:{line}: {_dotted(path) or '(top level)'}: a key must be text, not a list or mapping"
                )
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            sub = (*path, key)
            if key in out:
                raise ConfigError(f"{name}:{line}: {_dotted(sub)}: duplicate key (first at line {lines[sub]})")
            lines[sub] = line
            out[key] = _construct(loader, value_node, sub, lines, name, guard)
        return out
    items = []
    for i, item in enumerate(node.value):
        lines[(*path, i)] = item.start_mark.line + 1
        items.append(_construct(loader, item, (*path, i), lines, name, guard))
    return items


def _is_text(path: tuple[str | int, ...]) -> bool:
    """Whether the scalar at *path* is always text (see `_TEXT_SCALARS`)."""
    if len(path) == 1:
        return path[0] in _TEXT_SCALARS
    if len(path) == 2:
        return path[0] in _TEXT_LISTS
    if path[0] == "sources" and len(path) == 3:
        return path[2] in _SOURCE_TEXT_SCALARS
    if path[0] == "sources" and len(path) == 4:
        return path[2] in _SOURCE_TEXT_LISTS and isinstance(path[3], int)
    return False


# ---------------------------------------------------------------------------------------------- errors


def _dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


#: Strict-mode type errors, said plainly (the value is shown: secrets are never typed fields).
_EXPECTED: Final = {
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


def _message(err: Mapping[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx['ge']}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']}"
    if kind == "less_than_equal":
        return f"must be ≤ {ctx['le']}"
    if kind == "less_than":
        return f"must be < {ctx['lt']}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "finite_number":
        return f"must be a finite number (got {err.get('input')!r})"
    if kind == "missing":
        return "required key is missing"
    if kind in _EXPECTED and "input" in err:
        value = err["input"]
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        return f"expected {_EXPECTED[kind]}, got {_kind(value)} {shown}"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


#: Config keys whose flag is not simply ``--key-with-dashes``.
_FLAGS: Final = {"content_mirrors": "--content-mirror"}


def _format_errors(exc: ValidationError, origin: _Origin, cli_paths: set[tuple[str, ...]]) -> tuple[str, bool]:
    """One line per error: ``FILE:LINE: key.path: message`` (or ``option --flag: message``); and whether
    every error is a flag's."""
    out: list[tuple[int, str]] = []  # (line or 0 for flags, message): sorted so the file reads top-down
    from_file = False
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if isinstance(p, int | str) and p != "[key]")
        key = _dotted(loc) or "(top level)"
        msg = _message(err)
        if err["type"] == "extra_forbidden":
            msg = f"unknown key{_suggest(loc)}"
        from_cli = any(loc[: len(p)] == p for p in cli_paths)
        if from_cli:
            flag = key
            if (loc[0],) in cli_paths:
                flag = _FLAGS.get(str(loc[0]), "--" + str(loc[0]).replace("_", "-"))
                if len(loc) > 1 and isinstance(loc[1], int):
                    flag += f" (value {loc[1] + 1})"
            out.append((0, f"option {flag}: {msg}"))
            continue
        from_file = True
        line = None
        for n in range(len(loc), -1, -1):
            if loc[:n] in origin.lines:
                line = origin.lines[loc[:n]]
                break
        where = origin.file or "<config>"
        out.append((line or 0, f"{where}:{line}: {key}: {msg}" if line is not None else f"{where}: {key}: {msg}"))
    return "\n".join(_printable(text) for _, text in sorted(out, key=lambda x: x[0])), not from_file


def _printable(text: str) -> str:
    """*text* with control and other unprintable characters escaped (``\\x1e``): keys and values quoted
    from a config file must neither split an error line nor reach the terminal raw."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _suggest(loc: tuple[str | int, ...]) -> str:
    """``, did you mean max_pulls? (allowed: …)``: the valid key closest to the unknown one (if one is close)
    and the keys valid where it was found."""
    model: type[BaseModel] | None = SyncConfig
    per_host: type[BaseModel] | None = None  # the model under a host key of `credentials:` or `tls:`
    for part in loc[:-1]:
        if per_host is not None:
            model, per_host = per_host, None
        elif model is SyncConfig and part == "ratelimit":
            model = RateLimitConfig
        elif model is SyncConfig and part == "sources":
            model = SourceEntry
        elif model is SyncConfig and part == "notify":
            model = NotifyEntry
        elif (model is NotifyEntry and isinstance(part, int)) or (model is SourceEntry and isinstance(part, int)):
            continue
        elif model is SyncConfig and part in ("credentials", "tls"):
            model, per_host = None, Credential if part == "credentials" else TLSEntry
        else:
            return ""
    if model is None:
        return ""
    hidden = set(SECRET_KEYS) if model is Credential else set()
    names = sorted((f.alias or n) for n, f in model.model_fields.items() if n not in hidden)
    import difflib  # only for this hint

    close = difflib.get_close_matches(str(loc[-1]).lower().replace("-", "_"), names, n=1) if loc else []
    hint = f", did you mean {close[0]}?" if close else ""
    return f"{hint} (allowed: {', '.join(names)})"


__all__ = [
    "DEFAULT_LIBRARY",
    "DEFAULT_SOURCE",
    "SECRET_KEYS",
    "Credential",
    "NotifyEntry",
    "RateLimitConfig",
    "SourceEntry",
    "SyncConfig",
    "TLSEntry",
    "UsageError",
    "default_state_path",
    "load_config",
    "parse_config",
    "parse_duration",
]
