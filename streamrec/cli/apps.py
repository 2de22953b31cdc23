"""``streamrec apps``: list, create and delete apps on the deployment's Redis directly, for
operators (the API's ``/admin/apps`` does the same through :mod:`streamrec.apps`)."""

from __future__ import annotations

import asyncio
import time

import click
import orjson

from streamrec.cli.options import redis_command
from streamrec.settings import get_settings


def _registry(action):
    """Run ``action(wiring)`` on the configured Redis; an app error is one line."""
    from streamrec.apps import AppError

    with redis_command(get_settings(), "apps", (AppError,)) as wiring:
        return action(wiring)


def _settings(pairs: tuple[str, ...], document: str | None) -> dict:
    """``--set NAME=VALUE`` (a JSON value, else the text) over ``--settings JSON``."""
    try:
        settings = {} if document is None else orjson.loads(document)
    except orjson.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--settings") from None
    if not isinstance(settings, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--settings")
    for pair in pairs:
        name, equals, text = pair.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--set")
        try:
            settings[name] = orjson.loads(text)
        except orjson.JSONDecodeError:
            settings[name] = text
    return settings


def _list() -> None:
    def listed(wiring):
        registry = wiring.apps()
        for name, app in registry.all().items():
            made = ("-" if not app.created_at else
                    time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(app.created_at)))
            roles = ",".join(sorted(registry.key_roles(name))) or "-"
            click.echo(f"{name:<33} {made:<21} keys {roles:<16} prefix "
                       f"{registry.prefix(name):<20} settings "
                       f"{orjson.dumps(app.settings).decode()}")

    _registry(listed)


@click.group(name="apps", invoke_without_command=True)
@click.pass_context
def apps_group(context: click.Context) -> None:
    """List the apps (isolated recommenders on this deployment); subcommands list,
    create, delete."""
    if context.invoked_subcommand is None:
        _list()


@apps_group.command(name="list")
def list_apps() -> None:
    """Each app: when it was made, the roles that have keys, its Redis prefix, settings."""
    _list()


@apps_group.command(name="create")
@click.argument("name")
@click.option("--set", "pairs", multiple=True, metavar="NAME=VALUE",
              help="A setting of the app, e.g. --set decay_half_life_seconds=3600 "
                   "(repeatable; the value is JSON or text).")
@click.option("--settings", "document", default=None, metavar="JSON",
              help='All its settings as one JSON object, e.g. \'{"event_weights": '
                   '{"view": 1, "buy": 5}}\'.')
def create(name: str, pairs: tuple[str, ...], document: str | None) -> None:
    """Create app NAME and print its API keys, one per role (shown this once). The
    workers pick it up at its first record; no restart."""
    settings = _settings(pairs, document)

    def made(wiring):
        return wiring.apps().create(name, settings)

    app, keys = _registry(made)
    click.echo(f"created app {app.name} (settings {orjson.dumps(app.settings).decode()}); "
               "its keys, shown this once:")
    for role, key in keys.items():
        click.echo(f"  {role:<6} {key}")


@apps_group.command(name="delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
def delete(name: str, yes: bool) -> None:
    """Delete app NAME: its keys and every piece of its state in Redis. Its records still
    on the topics are dropped by the worker (and counted), not applied."""
    from streamrec.apps import delete_app, tombstones_of

    if not yes:
        click.confirm(f"Delete app {name!r} and all of its state?", abort=True)
    removed = _registry(lambda wiring: delete_app(wiring.apps(), name))
    tombstones = tombstones_of(get_settings(), name, removed)
    asyncio.run(_send_tombstones(name, tombstones))
    click.echo(f"deleted app {name}: {removed['keys_revoked']} key(s) revoked, "
               f"{removed['redis_keys_removed']:,} Redis key(s) removed, "
               f"{sum(len(r) for _, r in tombstones):,} catalog record(s) tombstoned")


async def _send_tombstones(name: str, tombstones) -> None:
    """Tombstones for a deleted app's catalog records, with its header (the worker drops
    them: the app is deleted)."""
    from streamrec import kafka
    from streamrec.apps import record_headers

    if not tombstones:
        return
    producer = kafka.producer(get_settings())
    await producer.start()
    try:
        for topic, records in tombstones:
            sent = [await producer.send(topic, key=key, value=None,
                                        headers=record_headers(name))
                    for key, _ in records]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
