"""``streamrec lists``: import a batch job's lists as the model ``lists:NAME`` (from a file
or a Kafka topic), list the sets, show one, delete one (``docs/lists.md``)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from recommender.base import LIST_SET_PATTERN
from streamrec.cli.options import app_option, redis_command, settings_of


def _check_name(context: click.Context, option: click.Parameter, value: str) -> str:
    import re

    if re.fullmatch(LIST_SET_PATTERN, value) is None:
        raise click.BadParameter(f"{value!r} is not a set name ({LIST_SET_PATTERN})")
    return value


name_argument = click.argument("name", callback=_check_name)


@click.group(name="lists")
def lists_group() -> None:
    """Lists a batch job made, served as the model lists:NAME."""


@lists_group.command(name="import")
@name_argument
@click.argument("path", required=False,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", default=None, metavar="TOPIC",
              help="Read the lists from this Kafka topic (JSON formats) instead of a file.")
@click.option("--until-end", is_flag=True,
              help="With --topic: stop at the topic's end as it is now, not at the end "
                   "marker record {\"end\": true}.")
@click.option("--timeout", default=600.0, show_default=True,
              help="With --topic: seconds to wait for the end marker.")
@click.option("--format", "data_format", default="auto", show_default=True,
              type=click.Choice(["auto", "personalize", "jsonl", "csv"]),
              help="auto: from the first line (a file; a topic's default is personalize "
                   "when auto).")
@click.option("--fallback", default="hybrid", show_default=True, metavar="MODEL",
              help="The model that ranks a user the set has no list for ('none': popular "
                   "items, flagged backfill).")
@click.option("--blend", default=0.0, show_default=True,
              help="Share of the fresh signal fused into each list: the neighbours of what "
                   "the user touched since the lists were made (0: the lists as they are).")
@click.option("--similar", is_flag=True,
              help="The rows are items' similar-item lists (itemId / item_id).")
@click.option("--show-rejected", default=5, show_default=True,
              help="How many reasons to list, each with its first line numbers.")
@app_option
def import_lists(name: str, path: Path | None, topic: str | None, until_end: bool,
                 timeout: float, data_format: str, fallback: str, blend: float,
                 similar: bool, show_rejected: int, app_name: str) -> None:
    """Import lists as set NAME: written beside the current set, then switched to at
    once (requests see the old set or the new one, never a mix)."""
    from tqdm import tqdm

    from streamrec import lists
    from streamrec.logs import escape
    from streamrec.storage.list_sets import ListSetError

    if (path is None) == (topic is None):
        raise click.UsageError("give either a FILE or --topic TOPIC")
    settings = settings_of(app_name)
    chosen = None if fallback == "none" else fallback
    with redis_command(settings, "cli", (lists.ImportFailed, ListSetError)) as wiring:
        sets = wiring.list_sets()
        if path is not None:
            with tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                      desc=f"lists {name}") as bar:
                report = lists.import_file(sets, name, path, data_format, chosen, blend,
                                           similar, bar.update)
        else:
            offsets: dict[str, list[int]] = {}
            json_format = "personalize" if data_format == "auto" else data_format
            if json_format == "csv":
                raise click.UsageError("--topic takes a JSON format (personalize, jsonl)")
            with tqdm(unit="list", desc=f"lists {name}") as bar:
                records = lists.topic_records(settings, topic, until_end, timeout, offsets,
                                              bar.update)
                report = lists.import_records(
                    sets, name, records, json_format, time.time(),
                    lambda: {"topic": topic, "offsets": offsets, "format": json_format},
                    chosen, blend, similar)
        if report.previous is not None:
            click.echo(f"lists {name}: switched to {report.generation}; the previous "
                       f"generation {report.previous} is deleted in "
                       f"{sets.grace_seconds:.0f} s")
            sets.retire(name, report.previous)
    click.echo(f"lists {name}: {report.read:,} rows read, {report.users:,} user lists and "
               f"{report.item_lists:,} item lists accepted ({report.items:,} items), "
               f"{report.rejected.total:,} rejected, in {report.seconds:.1f} s")
    for entry in report.rejected.summary()[:show_rejected]:
        lines = ", ".join(str(line) for line in entry["lines"])
        click.echo(f"  {entry['count']:,} rejected: {escape(str(entry['reason']))} "
                   f"(line {lines}{', ...' if entry['count'] > len(entry['lines']) else ''})")
    if not report.accepted:
        raise click.ClickException(f"lists {name}: no row was accepted; nothing changed")


@lists_group.command(name="list")
@app_option
def list_sets(app_name: str) -> None:
    """Every set: its generation, when it was made, its counts."""
    with redis_command(settings_of(app_name), "cli") as wiring:
        found = wiring.list_sets().all()
    if not found:
        click.echo("no list sets (streamrec lists import NAME FILE)")
    for name, pointer in found.items():
        click.echo(f"lists:{name}  generation {pointer['generation']}  made "
                   f"{_when(pointer['made_at'])}  {pointer['users']:,} users  "
                   f"{pointer['item_lists']:,} item lists  fallback "
                   f"{pointer['fallback'] or 'none'}  blend {pointer['blend']}")


@lists_group.command()
@name_argument
@app_option
def show(name: str, app_name: str) -> None:
    """One set's pointer and card (JSON)."""
    import orjson

    with redis_command(settings_of(app_name), "cli") as wiring:
        sets = wiring.list_sets()
        pointer, card = sets.get(name), sets.card(name)
        leftovers = sets.leftovers(name)
    if pointer is None:
        raise click.ClickException(f"lists: no set named {name!r} (streamrec lists list)")
    click.echo(orjson.dumps({"name": name, **pointer, "card": card,
                             "leftover_generations": dict(leftovers)},
                            option=orjson.OPT_INDENT_2).decode())


@lists_group.command()
@name_argument
@app_option
def delete(name: str, app_name: str) -> None:
    """Delete a set (and what a failed import of it left behind)."""
    with redis_command(settings_of(app_name), "cli") as wiring:
        existed = wiring.list_sets().delete(name)
    if not existed:
        raise click.ClickException(f"lists: no set named {name!r} (streamrec lists list)")
    click.echo(f"lists {name}: deleted")


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))
