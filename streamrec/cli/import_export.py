"""Commands that move data in and out: import rows into Kafka, export lists to a file."""

from __future__ import annotations

from pathlib import Path

import click

from recommender.base import MODELS
from streamrec.cli.options import app_option, settings_of


@click.command(name="import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(["items", "users", "events"]), default=None,
              help="What the rows are (default: what the format holds; events for csv "
                   "and jsonl).")
@click.option("--format", "data_format", default=None,
              type=click.Choice(["csv", "jsonl", "movielens-movies", "movielens-1m-movies",
                                 "movielens-ratings", "movielens-100k", "movielens-1m",
                                 "personalize", "personalize-items", "personalize-users"]),
              help="Default: from the file name (.csv, .jsonl or .ndjson; u.data is "
                   "movielens-100k, movies.dat movielens-1m-movies, any other *.dat "
                   "movielens-1m; a .csv with Amazon Personalize's USER_ID,ITEM_ID,TIMESTAMP "
                   "header is personalize, one with ITEM_ID and no USER_ID "
                   "personalize-items, the reverse personalize-users). movielens-ratings "
                   "(ratings.csv), movielens-100k (u.data) and movielens-1m (ratings.dat of "
                   "the 1M and 10M sets) load rating events; personalize loads an item "
                   "interactions dataset's CSV, personalize-items and -users its items and "
                   "users datasets' CSVs.")
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every rejected row here (JSON Lines: line, reason, row).")
@click.option("--show-rejected", default=10, show_default=True,
              help="How many rejected rows to list.")
@click.option("--batch", default=1000, show_default=True, help="Rows per acknowledged batch.")
@app_option
def import_rows(path: Path, kind: str | None, data_format: str | None, rejects: Path | None,
                show_rejected: int, batch: int, app_name: str) -> None:
    """Validate every row of a CSV or JSON Lines file (or MovieLens ratings, or Amazon
    Personalize interactions) and send the
    valid ones to Kafka (items and users to their compacted topics, events to the events
    topic), as records of --app (its header; its event types)."""
    from streamrec.data import importer
    from streamrec.logs import escape

    try:
        kind = kind or importer.KIND_OF_FORMAT.get(data_format or importer.detect(path),
                                                   "events")
        report = importer.run(path, kind, data_format, settings_of(app_name), rejects,
                              show_rejected, batch, app=app_name)
    except importer.ImportFailed as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"import: {report.read:,} rows read, {report.sent:,} sent (acknowledged by "
               f"Kafka), {report.rejected:,} rejected, in {report.seconds:.1f} s "
               f"({report.read / max(report.seconds, 1e-9):,.0f} rows/s)")
    for row in report.first_rejected:
        click.echo(f"  {escape(str(row))}")  # the reasons quote the file's names
    if report.rejected > len(report.first_rejected):
        click.echo(f"  ... and {report.rejected - len(report.first_rejected):,} more")
    if report.rejected:
        where = f" (all in {rejects})" if rejects else " (--rejects FILE keeps them all)"
        click.echo(f"error: {report.rejected:,} rows were rejected{where}", err=True)
        raise SystemExit(1)


@click.command()
@click.option("--users", "users_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Export for these users (one id per line).")
@click.option("--all-users", is_flag=True, help="Export for every user with a history.")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 500))
@click.option("--model", default=None, type=click.Choice(MODELS),
              help="Force a model (default: the placement's variant for each user).")
@click.option("--placement", default="default", show_default=True,
              help="Whose allocation chooses each user's variant, as GET /recommendations.")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON Lines: one {user_id, variant, model, items} per user.")
@click.option("--version", "state_version", default=None, metavar="NAME",
              help="The model version to rank with (default: the one serving).")
@click.option("--filter", "filter_name", default=None, metavar="NAME",
              help="A filter registered with PUT /admin/filters/NAME.")
@click.option("--filter-values", default=None, metavar="JSON",
              help="The filter's $PARAMETERS as one JSON object.")
@click.option("--chunk", default=1000, show_default=True, type=click.IntRange(1),
              help="Users read, ranked and written at a time (bounds the memory).")
@app_option
def export(users_file: Path | None, all_users: bool, k: int, model: str | None,
           placement: str, output: Path, state_version: str | None, filter_name: str | None,
           filter_values: str | None, chunk: int, app_name: str) -> None:
    """Write top-k lists for many users, ranked by the API's engine code, to a file."""
    from streamrec.data import export as exporting

    if (users_file is None) == (not all_users):
        raise click.UsageError("give either --users FILE or --all-users")
    try:
        version, report = exporting.run(settings_of(app_name), output, users_file, k, model,
                                        placement, state_version, filter_name, filter_values,
                                        chunk)
    except exporting.ExportError as error:
        raise click.ClickException(str(error)) from None
    models = ", ".join(f"{name} {count:,}" for name, count in report.models.most_common())
    click.echo(f"export: {report.users:,} users in {report.seconds:.1f} s "
               f"({report.users / max(report.seconds, 1e-9):,.0f} users/s) to {output}; "
               f"version {version}; ranked by: {models or 'nobody'}")
