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
