"""``hubmirror sync``: flags and config file → `hubmirror.service.SyncService`, with rich progress and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._app import (
    ContentMirrorOption,
    LogFormat,
    LogFormatOption,
    NoContentMirrorsOption,
    app,
    console,
    fail,
    out,
    say,
)

if TYPE_CHECKING:
    from ..config import SyncConfig
    from ..plan import Plan
    from ..report import SyncReport
    from ..service import SyncService


def render_plan(plan: Plan, report: SyncReport, cfg: SyncConfig | None = None) -> None:
    """The dry run's output: what would happen, what it costs, what the budget allows now."""
    from rich.table import Table
    from rich.text import Text

    from ..report import Outcome

    render_sources(plan)
    table = Table(title="hubmirror sync --dry-run", title_justify="left")
    for col in ("action", "source", "tags", "pulls", "why"):
        table.add_column(col)
    for item in plan.items:
        pulls = str(item.estimated_pulls) + (
            f" (up to {item.mirror_manifests} from {item.mirror})" if item.mirror else ""
        )
        table.add_row(item.kind, item.canonical, ", ".join(item.tags), pulls, item.reason)
    if plan.items:
        console.print(table)
    else:
        say("nothing to copy or retag")
    for line in report.failure_lines():  # what failed, grouped by cause, with counts and examples
        console.print(Text(line, style="red"), soft_wrap=True)
    if plan.diff is not None:
        d = plan.diff
        console.print(
            f"library {d.old_commit[:12]}..{d.new_commit[:12]}: {len(d.added)} groups added, "
            f"{len(d.removed)} removed, {len(d.changed)} changed"
        )
    elif plan.full_reconcile:
        console.print("library: no earlier synced commit (or not an ancestor): full reconciliation")
    console.print(
        f"{len(plan.copies)} to copy, {len(plan.retags)} to retag, {len(plan.up_to_date)} tags up to date, "
        f"{len(plan.failed)} failed, {len(plan.conflicts)} conflicts, {len(plan.leaving)} left the selection; "
        f"{pulls_text(plan, report)}; {budget_text(report)}"
    )
    if cfg is not None:
        console.print(allowance_text(plan, report, cfg))
    would_prune = report.by_outcome(Outcome.PRUNED)
    if would_prune:
        tags = [f"{i.dest}:{t}" for i in would_prune for t in i.tags]
        say(f"--prune would delete {len(tags)} tags: {', '.join(tags[:5])}{' …' if len(tags) > 5 else ''}")


def render_sources(plan: Plan) -> None:
    """Per tag source: how it was listed, the tags kept, and each dropped tag with the policy and why."""
    for src in plan.sources:
        if src.error:
            say(f"source {src.name}: {src.error} (nothing of it is pruned in this run)")
            continue
        say(f"source {src.name} ({src.via}): {src.listed} tags listed, {len(src.kept)} kept")
        if src.note:
            say(f"  note: {src.note}")
        if src.kept:
            say(f"  kept: {', '.join(t.name for t in src.kept)}")
        for d in src.dropped:
            say(f"  dropped {d.tag}: {d.policy}: {d.reason}")
        if src.artifacts:
            say(f"  {len(src.artifacts)} signature/referrer tags follow their images")


def pulls_text(plan: Plan, report: SyncReport) -> str:
    """What the copies cost: "up to N manifests from mirrors …, M pulls from Hub" when content mirrors are used.

    N is an upper bound: a mirror found holding an item's index may still lack some of its children (mirror.gcr.io
    caches only what is pulled often), and what a mirror lacks is pulled from the source instead."""
    if not report.mirrors:
        return f"pulls needed ≈ {plan.pulls_needed}"
    return (
        f"up to {plan.mirror_manifests} manifests from mirrors (an upper bound: what a mirror lacks is pulled "
        f"instead), ≈ {plan.pulls_needed} pulls from Hub"
    )


def budget_text(report: SyncReport) -> str:
    t = report.totals
    if t.ratelimit_remaining is None:
        return "the source reports no pull limit"
    return f"the source allows {t.ratelimit_remaining} of {t.ratelimit_limit} pulls now"


def allowance_text(plan: Plan, report: SyncReport, cfg: SyncConfig) -> str:
    """What a run now could do (its pull allowance: quota minus reserve, --max-pulls; the copies in it,
    taken as the run takes them), and how many quota windows and how long the whole plan takes."""
    from ..budget import allowance, capacity

    t = report.totals
    remaining, reserve = t.ratelimit_remaining, cfg.ratelimit.effective_reserve
    why = [f"quota {remaining} left, keeping {reserve}"] if remaining is not None else []
    if cfg.max_pulls is not None:
        why.append(f"--max-pulls {cfg.max_pulls}")
    budget = allowance(remaining, reserve=reserve, max_pulls=cfg.max_pulls)
    per_run = capacity(t.ratelimit_limit, reserve=reserve, max_pulls=cfg.max_pulls)
    fits = plan.affordable(budget, per_run, budgeted=cfg.source)
    n = len(plan.copies) - fits.unbudgeted
    other = f" (+ {fits.unbudgeted} from other registries, not counted)" if fits.unbudgeted else ""
    if budget is None:
        return f"budget: unlimited; all {len(plan.copies)} copies would run now"
    text = f"budget now: {budget} pulls ({'; '.join(why)}): {fits.whole} of {n} copies{other}"
    if fits.started:
        text += f", {fits.started} begun and continued across windows"
    text += f" (≈ {fits.pulls} pulls)"
    if fits.passed:
        text += f", {fits.passed} would be deferred"
    if fits.passed and cfg.wait_for_quota:
        text += " (--wait would wait for the window instead)"
    if remaining is not None and t.ratelimit_limit is not None:
        text += "\n" + forecast_text(plan, report, cfg)
    return text


def forecast_text(plan: Plan, report: SyncReport, cfg: SyncConfig) -> str:
    """``pulls needed: N from Docker Hub: W quota windows at the announced limit; done by …``."""
    from datetime import UTC, datetime

    from ..budget import forecast

    t = report.totals
    assert t.ratelimit_remaining is not None and t.ratelimit_limit is not None
    pulls = sum(i.estimated_pulls for i in plan.copies if i.source_registry == cfg.source)
    fc = forecast(
        pulls,
        remaining=t.ratelimit_remaining,
        limit=t.ratelimit_limit,
        window=t.ratelimit_window,
        reserve=cfg.ratelimit.effective_reserve,
        max_pulls=cfg.max_pulls,
        now=datetime.now(UTC),
    )
    per = f"{t.ratelimit_limit} per {_duration(t.ratelimit_window)}" if t.ratelimit_window else str(t.ratelimit_limit)
    text = f"pulls needed ≈ {pulls}"
    if fc.windows is None:
        return text + f"; the quota ({per}, keeping {cfg.ratelimit.effective_reserve}) leaves none to spend"
    if fc.windows <= 1:
        return text + ": all within the quota left now"
    text += f": {fc.windows} quota windows at {per} ({fc.now} now, then up to {fc.per_window} per window)"
    if fc.done_by is not None:
        text += f"; done by about {fc.done_by:%Y-%m-%d %H:%M} UTC with a run every window"
    return text


def _duration(seconds: int | None) -> str:
    if not seconds:
        return "window"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _split(values: list[str] | None, flag: str, metavar: str = "NAME") -> list[str] | None:
    """``NAME,NAME`` values of a repeatable *flag*, split; a value that names nothing (``''``, ``' '``,
    ``',,'``: an unset shell variable) is a usage error, never "no filter"."""
    from ..config import UsageError

    if not values:
        return None
    out = []
    for value in values:
        names = [v.strip() for v in value.split(",") if v.strip()]
        if not names:
            raise UsageError(
                f"option {flag}: {value!r} names nothing (an empty or unset variable?); "
                f"give {flag} {metavar}[,{metavar}…], or leave the option out"
            )
        out += names
    return out


def _either(yes: bool, no: bool, flag: str) -> bool | None:
    """``--FLAG`` → True, ``--no-FLAG`` → False, neither → None; both is a usage error."""
    from ..config import UsageError

    if yes and no:
        raise UsageError(f"option --{flag}: give --{flag} or --no-{flag}, not both")
    return True if yes else False if no else None


@app.command()
def sync(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
    library: Annotated[str | None, typer.Option(help="official-images: URL, local clone or bundle.")] = None,
    commit: Annotated[str | None, typer.Option(help="Library commit (default: the newest).")] = None,
    images: Annotated[list[str] | None, typer.Option("--images", help="Images to mirror: NAME,… (globs).")] = None,
    images_file: Annotated[Path | None, typer.Option(help="File of image names, one per line.")] = None,
    list_file: Annotated[Path | None, typer.Option("--list", help="File of image references, one per line.")] = None,
    source: Annotated[str | None, typer.Option(help="Registry to read docker.io content from.")] = None,
    content_mirror: ContentMirrorOption = None,
    no_content_mirrors: NoContentMirrorsOption = False,
    dest: Annotated[str | None, typer.Option(help="REGISTRY/NAMESPACE or oci:PATH.")] = None,
    layout: Annotated[
        str | None,
        typer.Option(
            help="Destination naming: flat (docker.io/library/python → NS/python) or mirror (NS/library/python,"
            " ghcr.io/a/b → NS/ghcr.io/a/b: a drop-in docker.io mirror for containerd, podman, Docker)."
        ),
    ] = None,
    platform: Annotated[list[str] | None, typer.Option(help="Platform to keep (repeatable).")] = None,
    windows: Annotated[bool, typer.Option("--windows", help="Include Windows images.")] = False,
    no_windows: Annotated[bool, typer.Option("--no-windows", help="Leave Windows images out (the default).")] = False,
    include: Annotated[list[str] | None, typer.Option(help="Tag regex to include (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Tag regex to exclude (repeatable).")] = None,
    repo: Annotated[
        list[str] | None,
        typer.Option("--repo", help="Mirror tags of REGISTRY/REPO (repeatable; docker.io uses Hub's tags API)."),
    ] = None,
    semver: Annotated[str | None, typer.Option(help="--repo: semver range of tags, e.g. '>=1.27 <2'.")] = None,
    keep: Annotated[int | None, typer.Option(help="--repo: keep the newest N tags.")] = None,
    prerelease: Annotated[bool | None, typer.Option("--prerelease", help="--repo: allow pre-releases.")] = None,
    immutable: Annotated[
        list[str] | None, typer.Option(help="--repo: regex of tags that never move (checked once).")
    ] = None,
    hub_api: Annotated[str | None, typer.Option(help="Docker Hub's tags API (default https://hub.docker.com).")] = None,
    signatures: Annotated[
        bool, typer.Option("--signatures", help="Copy signatures, attestations and referrers (the default).")
    ] = False,
    no_signatures: Annotated[
        bool, typer.Option("--no-signatures", help="Do not copy signatures, attestations and referrers.")
    ] = False,
    job: Annotated[
        str | None,
        typer.Option(
            help="This job's name: prune deletes only the tags of the running job (default: named by where its"
            " selection is defined: config file, list file, library and --images, --repo)."
        ),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(help="State: a SQLite file (PATH or sqlite:///PATH) or postgresql://USER@HOST:PORT/DB."),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the report as JSON to FILE.")] = None,
    dry_run: Annotated[bool | None, typer.Option("--dry-run", help="Plan only: no pulls, no writes.")] = None,
    max_pulls: Annotated[int | None, typer.Option(help="Spend at most N source manifest GETs.")] = None,
    reserve: Annotated[int | None, typer.Option(help="Pulls to leave unspent (default 5).")] = None,
    wait: Annotated[bool | None, typer.Option("--wait", help="Wait for the quota window instead of deferring.")] = None,
    hub_rate: Annotated[
        float | None,
        typer.Option(help="Requests per second to the Docker Hub source at most (default 20; 0: unpaced)."),
    ] = None,
    prune: Annotated[bool | None, typer.Option("--prune", help="Delete tags hubmirror created that left.")] = None,
    max_delete: Annotated[
        int | None, typer.Option(help="Prune refuses to delete more than N tags (default: 10 % of those it manages).")
    ] = None,
    overwrite: Annotated[
        bool | None, typer.Option("--overwrite", help="Replace destination tags hubmirror did not write.")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Images copied in parallel.")] = None,
    insecure: Annotated[list[str] | None, typer.Option(help="Registry to reach over plain HTTP.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Where library clones are cached.")] = None,
    metrics_file: Annotated[Path | None, typer.Option(help="Write Prometheus metrics here after each run.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="With --daemon: serve /metrics on this port.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    daemon: Annotated[bool, typer.Option("--daemon", help="Run on the config's schedule, forever.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every item in the table.")] = False,
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Mirror the selected official images (or an image list) into DEST, spending pulls only on changes.

    Exit codes: 0 all done; 1 failures; 75 work deferred by the pull budget (run again later; EX_TEMPFAIL);
    2 a usage error on the command line (an unknown flag, a bad value, flags that contradict each other).
    Ctrl-C or SIGTERM: the items in flight finish and are recorded, the rest is deferred (the deferred exit
    code); a second one aborts (130).
    """
    import logging

    from .._errors import HubmirrorError
    from ..config import SyncConfig, UsageError, load_config
    from ..redact import install_log_filter
    from ..runlog import setup_logging

    json_log = log_format is LogFormat.json
    if json_log:
        setup_logging("json", level=logging.INFO)
    else:
        setup_logging("text", level=logging.WARNING, text_format="%(levelname)s %(name)s: %(message)s")
    install_log_filter()  # no credential in a URL reaches the log (defence in depth: messages omit them)

    def refuse(e: HubmirrorError) -> None:
        if json_log:
            logging.getLogger("hubmirror.run").error("%s", e, extra={"fields": {"event": "error"}})
        else:
            fail(e)

    try:
        cli: dict[str, Any] = {
            "library": library,
            "commit": commit,
            "images": _split(images, "--images"),
            "images_file": images_file,
            "list": list_file,
            "source": source,
            "dest": dest,
            "layout": layout,
            "platforms": _split(platform, "--platform", "OS/ARCH"),
            "windows": _either(windows, no_windows, "windows"),
            "include_tags": include,
            "exclude_tags": exclude,
            "repos": repo,
            "semver": semver,
            "keep": keep,
            "prerelease": prerelease,
            "immutable": immutable,
            "hub_api": hub_api,
            "signatures": _either(signatures, no_signatures, "signatures"),
            "job": job,
            "state": state,
            "report": report,
            "dry_run": dry_run,
            "max_pulls": max_pulls,
            "ratelimit.reserve": reserve,
            "wait": wait,
            "hub_rate": hub_rate,
            "prune": prune,
            "max_delete": max_delete,
            "overwrite": overwrite,
            "concurrency": concurrency,
            "insecure": insecure,
            "metrics_file": metrics_file,
            "metrics_port": metrics_port,
        }
        if no_content_mirrors and content_mirror:
            raise UsageError("option --no-content-mirrors: give --content-mirror or --no-content-mirrors, not both")
        base = load_config(config) if config is not None else SyncConfig()
        cfg = base.merge({**cli, "content_mirrors": content_mirror})
        if no_content_mirrors:
            cfg = cfg.without_content_mirrors()
    except UsageError as e:  # the command line itself: exit 2, as for an unknown flag
        refuse(e)
        raise typer.Exit(2) from None
    except HubmirrorError as e:  # the config file, an unreadable input: exit 1
        refuse(e)
        raise typer.Exit(1) from None
    if daemon:
        raise typer.Exit(run_daemon(cfg, cache_dir=cache_dir, json_out=json_out, verbose=verbose, json_log=json_log))
    raise typer.Exit(run_once(cfg, cache_dir=cache_dir, json_out=json_out, verbose=verbose, json_log=json_log))


def run_once(cfg: SyncConfig, *, cache_dir: Path | None, json_out: bool, verbose: bool, json_log: bool = False) -> int:
    """One sync with progress and a summary (or, with *json_log*, JSON log lines); returns the exit code."""
    from ..service import SyncService

    service = SyncService(cache_dir=cache_dir)
    if json_log:
        return _run_logged(service, cfg, json_out=json_out, trigger="sync")
    return _run_rendered(service, cfg, json_out=json_out, verbose=verbose)


def _run_logged(service: SyncService, cfg: SyncConfig, *, json_out: bool, trigger: str) -> int:
    """One sync told by log lines only (``--log-format json``): no progress bars, no table."""
    from datetime import UTC, datetime

    from .. import runlog
    from ..budget import QuotaWait
    from ..sync import SyncEvents

    class Logged(SyncEvents):
        def quota_wait(self, wait: QuotaWait) -> None:
            (runlog.quota_wait if wait.state != "resumed" else runlog.quota_resumed)(wait)

    began = datetime.now(UTC)
    runlog.run_started(None, [trigger], library=cfg.library if cfg.reads_library else None, dest=cfg.dest)
    result = service.run_once(cfg, events=Logged())
    runlog.run_finished(result, None, [trigger], began=began)
    if json_out and result.report is not None:
        out.print(result.report.to_json(), markup=False)
    return result.exit_code


def _run_rendered(service: SyncService, cfg: SyncConfig, *, json_out: bool, verbose: bool) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..report import Outcome
    from ._progress import AmountColumn, RichEvents

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        AmountColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # in a log (cron, CI, a pipe) no bars: no refresh thread either
    ) as progress:
        result = service.run_once(cfg, events=RichEvents(progress), on_signal=say)
        if result.error is not None:
            progress.stop()
    if result.interrupted == "aborted":
        fail("the run was aborted before it could end; the next run goes on from here")
        return result.exit_code
    if result.error is not None or result.report is None or result.plan is None:
        fail(result.error)
        return 1
    if cfg.dry_run:
        render_plan(result.plan, result.report, cfg)
    else:
        result.report.render(console, verbose=verbose)
    # What makes the selection doubtful, one line each (also rows of the table above).
    for what, reason in result.plan.selection_errors:
        fail(f"{what}: {reason}")
    for item in result.report.by_outcome(Outcome.FAILED):
        if item.source == "--prune":  # refused (or, in a dry run, a real run would refuse): one line, why
            fail(f"{'--prune:' if cfg.dry_run else 'prune'} {item.reason}")
        elif item.source == "--dest":  # failing the same way again and again: the run stopped pulling
            fail(item.reason)
    if result.interrupted == "stopped":
        deferred = result.report.by_outcome(Outcome.DEFERRED)
        say(
            f"interrupted: the items in flight finished and are recorded; {len(deferred)} deferred to the next run "
            f"(exit code {result.exit_code})"
        )
    if json_out:
        out.print(result.report.to_json(), markup=False)
    return result.exit_code


def run_daemon(
    cfg: SyncConfig, *, cache_dir: Path | None, json_out: bool, verbose: bool, json_log: bool = False
) -> int:
    """`run_once` at every time of the config's ``schedule``, until interrupted."""
    import logging
    from datetime import datetime

    from .. import runlog
    from .._errors import HubmirrorError
    from ..service import SyncService

    service = SyncService(cache_dir=cache_dir)
    log = logging.getLogger("hubmirror.run")

    def told(code: int, nxt: datetime) -> None:
        if json_log:
            runlog.next_run(code, nxt)
        else:
            console.print(f"exit code {code}; next run at {nxt:%Y-%m-%d %H:%M}")

    def job() -> int:
        if json_log:
            return _run_logged(service, cfg, json_out=json_out, trigger="schedule")
        return _run_rendered(service, cfg, json_out=json_out, verbose=verbose)

    try:
        if cfg.metrics_port is not None and cfg.schedule:
            url = f"http://{cfg.metrics_addr}:{cfg.metrics_port}/metrics"
            if json_log:
                log.info("metrics at %s", url, extra={"fields": {"event": "metrics", "url": url}})
            else:
                console.print(f"metrics at {url}")
        return service.run_scheduled(cfg, job, on_wait=told)
    except HubmirrorError as e:
        if json_log:
            log.error("%s", e, extra={"fields": {"event": "error"}})
        else:
            fail(e)
        return 1
