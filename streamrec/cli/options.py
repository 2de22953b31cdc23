"""Options more than one command takes."""

from __future__ import annotations

import click

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def refuse_log_level(context: click.Context, option: click.Parameter, value: str) -> str:
    """A level logging knows, else one line naming the option (not a usage page)."""
    if value.lower() not in LOG_LEVELS:
        raise click.ClickException(f"--log-level: {value!r} is not one of "
                                   f"{', '.join(LOG_LEVELS)}")
    return value.lower()


def check_app(context: click.Context, option: click.Parameter, value: str) -> str:
    """An app's name, else one line naming the option."""
    from streamrec.apps import AppError, check_name

    try:
        return check_name(value)
    except AppError as error:
        raise click.BadParameter(str(error).removeprefix("app: ")) from None


# The app a command acts on: ``default`` is the deployment's own state (streamrec.apps).
app_option = click.option("--app", "app_name", default="default", show_default=True,
                          metavar="NAME", callback=check_app,
                          help="The app whose state this acts on.")
