"""Commands on model versions: rebuild, promote, rollback, list, delete, snapshots."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

from streamrec.cli.options import app_option, settings_of

if TYPE_CHECKING:  # imported by the commands that use them: `streamrec --help` stays quick
    from streamrec.storage.model_versions import Versions
    from streamrec.wiring import Wiring


@click.command()
@click.option("--version", "name", required=True, metavar="NAME", help="The new version.")
@click.option("--set", "overrides", multiple=True, metavar="SETTING=VALUE",
              help="A model setting of this version, e.g. --set mf_dim=64 (repeatable).")
@click.option("--from-snapshot", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Start from a snapshot; replay only the log after it.")
@app_option
def rebuild(name: str, overrides: tuple[str, ...], from_snapshot: Path | None,
            app_name: str) -> None:
    """Build a model version by replaying the retained events topic (the app's records of
    it) into its own namespace while the serving version keeps serving."""
    from tqdm import tqdm

    from streamrec.storage import model_versions as versions
    from streams import rebuild as rebuilding

    try:
        changes = versions.parse_overrides(list(overrides))
        with tqdm(unit="event", desc=f"rebuild {name}") as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done)

            report = asyncio.run(rebuilding.rebuild(settings_of(app_name), name, changes,
                                                    from_snapshot, progress, app_name))
    except versions.VersionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"rebuild {name}: {report.events:,} events applied, {report.rejected:,} "
               f"rejected, {report.skipped:,} already applied, in {report.seconds:.1f} s; "
               f"offsets {report.offsets}.\nKeep it live with `streamrec worker{_app(app_name)} "
               f"--version {name}`; serve it with `streamrec promote{_app(app_name)} {name}`.")


@click.command()
@click.argument("name")
@click.option("--author", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
@click.option("--force", is_flag=True,
              help="Promote even a version no worker keeps live or one that lags behind.")
@app_option
def promote(name: str, author: str, force: bool, app_name: str) -> None:
    """Serve model version NAME (every API process follows within a second). Refused
    unless a worker consumes for it and it is at most STREAMREC_PROMOTE_MAX_LAG events
    behind the events topic (--force promotes anyway). NAME may be a trained run,
    MODEL@N (`streamrec versions` lists them): it then serves MODEL."""
    from streamrec.storage import model_versions as versions

    if "@" in name:
        _promote_run(name, author, app_name)
        return
    from streamrec.version_status import not_promotable, statuses

    settings = settings_of(app_name)
    wiring = _wiring(app_name)
    registry = wiring.versions()
    try:
        version = registry.check_promotable(name)
        if registry.serving() == name:
            click.echo(f"{name} is serving already: nothing changed (`streamrec rollback` "
                       "still goes back to what served before it)")
            return
        status = asyncio.run(statuses(settings, registry, {name: version}))[name]
        problem = not_promotable(status, settings.promote_max_lag)
        if problem and not force:
            raise versions.VersionError(
                f"refused: {problem}. Start `streamrec worker --version {name}` and promote "
                f"once `streamrec versions` shows it live and caught up, or promote anyway "
                "with --force")
        previous = registry.promote(name, author)
    except versions.VersionError as error:
        raise click.ClickException(str(error)) from None
    if previous is None:
        click.echo(f"{name} is serving already: nothing changed")
        return
    click.echo(f"serving {name} (was {previous}); `streamrec rollback` goes back")
    if problem:
        click.echo(f"warning: promoted with --force although {problem}: until a worker "
                   f"keeps {name} live, every list is served from its state as it is now; "
                   "new events, new users and new items are not learned and the lists go "
                   f"stale. A running main worker starts a worker for it within seconds; "
                   f"else run `streamrec worker --version {name}`.", err=True)


def _promote_run(name: str, author: str, app_name: str) -> None:
    from streamrec.storage.trained_runs import RunError, parse_run

    try:
        model, number = parse_run(name)
        previous = _wiring(app_name).trained_runs().promote(model, number, author)
    except RunError as error:
        raise click.ClickException(str(error)) from None
    if previous is False:
        click.echo(f"{name} serves {model} already: nothing changed")
        return
    was = "no run" if previous is None else f"{model}@{previous}"
    click.echo(f"{model} served by {name} (was {was}); API processes follow within "
               f"STREAMREC_TRAINED_REFRESH_SECONDS; `streamrec rollback --model {model}` goes "
               "back")


@click.command()
@click.option("--author", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
@click.option("--model", default=None, metavar="MODEL",
              help="Roll back a trained model's run (ease, ials) instead of the version.")
@app_option
def rollback(author: str, model: str | None, app_name: str) -> None:
    """Serve again the version (or, with --model, the run) that served before the last
    promote."""
    from streamrec.storage import model_versions as versions

    if model is not None:
        from streamrec.storage.trained_runs import RunError

        try:
            number = _wiring(app_name).trained_runs().rollback(model, author)
        except RunError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"{model} served by {model}@{number} again" if number is not None
                   else f"{model} served by no run again (lists backfill popular items)")
        return
    try:
        restored = _versions(app_name).rollback(author)
    except versions.VersionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"serving {restored} again")


@click.group(name="versions", invoke_without_command=True)
@app_option
@click.pass_context
def versions_group(context: click.Context, app_name: str) -> None:
    """List model versions (the serving one marked *); subcommands delete, log."""
    context.obj = app_name  # the subcommands act on the same app
    if context.invoked_subcommand is not None:
        return
    from streamrec.version_status import statuses

    wiring = _wiring(app_name)
    registry = wiring.versions()
    serving = registry.serving()
    listed = registry.all()
    status = asyncio.run(statuses(wiring.settings, registry, listed))
    for name, version in listed.items():
        store = wiring.for_version(name, version).store()
        click.echo(f"{'*' if name == serving else ' '} {name:<20} {version.status:<9} "
                   f"{status[name].describe():<32} "
                   f"events {store.events_applied():>12,}  items with factors "
                   f"{store.items_with_factors():>9,}  "
                   f"settings {orjson.dumps(version.settings).decode()}")
    _list_runs(wiring)
    if not status[serving].live and status[serving].error is None:
        which = "" if serving == "main" else f"{_app(app_name)} --version {serving}"
        click.echo(f"warning: the serving version {serving} is not live: start `streamrec "
                   f"worker{which}`", err=True)


def _list_runs(wiring: Wiring) -> None:
    """The trained runs (``streamrec trainer``), * marking each model's serving one."""
    from recommender.base import BATCH_MODELS
    from streamrec.storage.trained_runs import describe_run

    runs = wiring.trained_runs()
    serving = runs.serving()
    for model in BATCH_MODELS:
        for run in runs.runs(model):
            mark = "*" if serving.get(model) == run.number else " "
            click.echo(f"{mark} {describe_run(run)}")


@versions_group.command(name="delete")
@click.argument("name")
@click.pass_obj
def versions_delete(app_name: str, name: str) -> None:
    """Delete model version NAME and its state (not the serving one)."""
    from streamrec.storage import model_versions as versions

    try:
        removed = _versions(app_name).delete(name)
    except versions.VersionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"deleted version {name}: {removed:,} keys")


@versions_group.command(name="rewrite-histories")
@click.option("--version", "name", default="main", show_default=True)
@click.pass_obj
def versions_rewrite_histories(app_name: str, name: str) -> None:
    """Rewrite version NAME's histories written before 2026-12-02 into the layout with the
    default event types in their scores (the worker does it for a user it touches; this
    frees the memory of the others). Safe beside a running worker."""
    from tqdm import tqdm

    from streamrec.storage import model_versions as versions

    try:
        store = _wiring(app_name).for_version(name).store()
    except versions.VersionError as error:
        raise click.ClickException(str(error)) from None
    with tqdm(unit="user", desc=f"histories of {name}") as bar:
        rewritten = store.rewrite_histories(progress=bar.update)
    click.echo(f"version {name}: {rewritten:,} histories rewritten, {bar.n:,} users looked at")


@versions_group.command(name="log")
@click.pass_obj
def versions_log(app_name: str) -> None:
    """Every promote and rollback, newest first."""
    for entry in _versions(app_name).log():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["at"]))
        click.echo(f"{when}Z {entry['action']:<8} {entry['version']} (was "
                   f"{entry['previous']}) by {entry['author']}")


@click.group()
def snapshot() -> None:
    """Write a version's state, with the offsets it reflects, to a file; load one back."""


@snapshot.command(name="save")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--version", "name", default="main", show_default=True)
@app_option
def snapshot_save(path: Path, name: str, app_name: str) -> None:
    from tqdm import tqdm

    wiring = _wiring(app_name)
    registry = wiring.versions()
    version = registry.get(name)
    if version is None:
        raise click.ClickException(f"version {name!r} does not exist")
    with tqdm(unit="key", desc=f"snapshot {name}") as bar:
        header = wiring.for_version(name, version).save_snapshot(path, bar.update,
                                                                 version.settings)
    click.echo(f"snapshot of {name}: {header['keys']:,} keys, offsets {header['offsets']}"
               f" -> {path}")


@snapshot.command(name="restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--version", "name", required=True, help="A new version to restore into.")
@app_option
def snapshot_restore(path: Path, name: str, app_name: str) -> None:
    from tqdm import tqdm

    from streamrec.storage import model_versions as versions

    wiring = _wiring(app_name)
    registry = wiring.versions()
    try:
        if name == versions.MAIN or registry.get(name) is not None:
            raise versions.VersionError(f"version {name!r} exists: restore into a new name")
        with tqdm(unit="key", desc=f"restore {name}") as bar:
            header = wiring.restore_snapshot(path, registry.prefix(name), bar.update)
        registry.register(versions.Version(name, header.get("settings", {})))
    except versions.VersionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"restored {path} into version {name} (offsets {header['offsets']}); "
               f"`streamrec worker{_app(app_name)} --version {name}` continues from them")


def _versions(app_name: str) -> Versions:
    return _wiring(app_name).versions()


def _wiring(app_name: str) -> Wiring:
    """App ``app_name``'s wiring. Operator commands wait longer on Redis than the roles: a
    snapshot moves many keys."""
    from streamrec.wiring import Wiring

    return Wiring.connect(settings_of(app_name), "versions", socket_timeout=30)


def _app(app_name: str) -> str:
    """The ``--app`` to repeat in a command this one suggests."""
    return "" if app_name == "default" else f" --app {app_name}"
