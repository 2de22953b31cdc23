"""``streamrec``: one thin command per job, grouped by what it works on (Feast's ``cli/``).

- :mod:`~streamrec.cli.roles`: worker, api, simulate, up;
- :mod:`~streamrec.cli.measurements`: report, evaluate, tune, bench, soak;
- :mod:`~streamrec.cli.import_export`: import, export;
- :mod:`~streamrec.cli.versioning`: rebuild, promote, rollback, versions, snapshot;
- :mod:`~streamrec.cli.event_types`: event-types (list, set, remove);
- :mod:`~streamrec.cli.apps`: apps (list, create, delete);
- :mod:`~streamrec.cli.lists`: lists (import, list, show, delete);
- :mod:`~streamrec.cli.trainer`: trainer (scheduled ease and ials runs).

Commands that act on one app's state take ``--app NAME`` (default: ``default``).

A command parses its options, asks the composition root (:mod:`streamrec.wiring`) or the
module that does the work, and prints; the work itself lives elsewhere.
"""

from __future__ import annotations

import logging

import click

from streamrec.cli import (
    apps,
    event_types,
    import_export,
    lists,
    measurements,
    roles,
    trainer,
    versioning,
)
from streamrec.cli.options import LOG_LEVELS, refuse_log_level
from streamrec.settings import SettingsError, get_settings


class Commands(click.Group):
    """The command group: a configuration refused anywhere below is one line (``Error:
    STREAMREC_...: what is wrong``) and exit status 1, never a traceback."""

    def resolve_command(self, context: click.Context, args: list[str]):
        context.meta["streamrec.help"] = "--help" in args  # the command's own arguments
        return super().resolve_command(context, args)

    def invoke(self, context: click.Context):
        from streamrec.connections import ConnectionFailed

        try:
            return super().invoke(context)
        except (SettingsError, ConnectionFailed) as error:
            # ConnectionFailed: a wrong password or an untrusted certificate, with which
            # connection, which role and why.
            raise click.ClickException(str(error)) from None


@click.group(cls=Commands)
@click.option("--log-level", default="info", show_default=True, callback=refuse_log_level,
              help=f"One of {', '.join(LOG_LEVELS)}.")
@click.pass_context
def main(context: click.Context, log_level: str) -> None:
    """streamrec: real-time recommendations from a Kafka event stream."""
    from streamrec import logs

    logs.install()  # every role's log lines escape what came from outside
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Every command, a role or a tool, refuses a bad configuration before it starts (a
    # command's --help still shows, whatever the environment holds).
    if not context.meta.get("streamrec.help"):
        get_settings()


for command in (roles.worker, roles.api, roles.simulate, roles.up, measurements.report,
                measurements.evaluate, measurements.tune, measurements.bench, measurements.soak,
                measurements.ingest_ceiling,
                import_export.import_rows, import_export.export, versioning.rebuild,
                versioning.promote, versioning.rollback, versioning.versions_group,
                versioning.snapshot, event_types.event_types_group, apps.apps_group,
                lists.lists_group, trainer.trainer):
    main.add_command(command)
