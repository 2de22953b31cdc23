"""``streamrec event-types``: the event types every role accepts, and their weights (one
table in Redis: :mod:`streamrec.storage.event_weights`)."""

from __future__ import annotations

import re

import click

from streamrec.cli.options import app_option, redis_command, settings_of

# As the admin API's path takes them: what a URL and a log line carry unescaped.
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _change(action, app_name: str):
    """Run ``action(shared table)`` on app ``app_name``'s table and print what it leaves."""
    from streamrec.storage.event_weights import EventTypeError

    with redis_command(settings_of(app_name), "streamrec", (EventTypeError,)) as wiring:
        shared = wiring.event_types()
        wiring.read_event_types()()  # an absent table is seeded first, as the roles would
        table = action(shared)
    for name, weight in sorted(table.items()):
        click.echo(f"{name:<24} {weight:g}")


@click.group(name="event-types", invoke_without_command=True)
@app_option
@click.pass_context
def event_types_group(context: click.Context, app_name: str) -> None:
    """List the accepted event types and their weights (of --app: each app has its own);
    subcommands set, remove. Every API process sees a change within
    STREAMREC_EVENT_TYPES_REFRESH_SECONDS, the worker from its next batch."""
    context.obj = app_name
    if context.invoked_subcommand is None:
        _change(lambda shared: shared.read(), app_name)


@event_types_group.command(name="set")
@click.argument("name")
@click.argument("weight", type=click.FloatRange(0, 1e6))
@click.pass_obj
def set_type(app_name: str, name: str, weight: float) -> None:
    """Accept event type NAME with WEIGHT (add it, or change its weight)."""
    if not _NAME.fullmatch(name):
        raise click.BadParameter("1 to 64 of A-Z a-z 0-9 _ . -", param_hint="NAME")
    _change(lambda shared: shared.put(name, weight), app_name)


@event_types_group.command(name="remove")
@click.argument("name")
@click.pass_obj
def remove_type(app_name: str, name: str) -> None:
    """Stop accepting event type NAME (events of it accepted by an API process before it
    re-read the table are dead-lettered by the worker)."""
    def remove(shared):
        table = shared.remove(name)
        if table is None:
            raise click.ClickException(f"{name!r} is not an event type")
        return table

    _change(remove, app_name)
