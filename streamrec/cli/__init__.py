"""``streamrec``: one thin command per job, grouped by what it works on (Feast's ``cli/``).

- :mod:`~streamrec.cli.roles`: worker, api, simulate, up;
- :mod:`~streamrec.cli.measurements`: report, evaluate, tune, bench, soak;
- :mod:`~streamrec.cli.import_export`: import, export;
- :mod:`~streamrec.cli.versioning`: rebuild, promote, rollback, versions, snapshot.

A command parses its options, asks the composition root (:mod:`streamrec.wiring`) or the
module that does the work, and prints; the work itself lives elsewhere.
"""

from __future__ import annotations

import logging

import click

from streamrec.cli import import_export, measurements, roles, versioning


class _Commands(click.Group):
    """A wrong password or an untrusted certificate ends any command with its one-line
    reason (which connection, which role, why), not a traceback."""

    def invoke(self, ctx: click.Context):
        from streamrec.connections import ConnectionFailed

        try:
            return super().invoke(ctx)
        except ConnectionFailed as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Commands)
@click.option("--log-level", default="info", show_default=True)
def main(log_level: str) -> None:
    """streamrec: real-time recommendations from a Kafka event stream."""
    from streamrec import logs

    logs.install()  # every role's log lines escape what came from outside
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


for command in (roles.worker, roles.api, roles.simulate, roles.up, measurements.report,
                measurements.evaluate, measurements.tune, measurements.bench, measurements.soak,
                measurements.ingest_ceiling,
                import_export.import_rows, import_export.export, versioning.rebuild,
                versioning.promote, versioning.rollback, versioning.versions_group,
                versioning.snapshot):
    main.add_command(command)
