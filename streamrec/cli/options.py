"""Options more than one command takes."""

from __future__ import annotations

import contextlib

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


def settings_of(app_name: str):
    """The settings commands run with on app ``app_name`` (its namespace and its settings'
    overrides: :func:`streamrec.apps.app_settings`); default's are the process's own."""
    from streamrec.apps import DEFAULT, AppNotFound, app_settings
    from streamrec.settings import get_settings

    settings = get_settings()
    if app_name == DEFAULT:
        return settings
    with redis_command(settings, "cli") as base:
        try:
            return app_settings(settings, base.apps().require(app_name))
        except AppNotFound as error:
            raise click.ClickException(f"--app: {error} (streamrec apps list)") from None


@contextlib.contextmanager
def redis_command(settings, role: str, refused: tuple[type[Exception], ...] = ()):
    """The wiring one command works with: an error of the ``refused`` kinds, or Redis not
    answering, is one line (``Error: ...``), never a traceback."""
    import redis

    from streamrec.wiring import Wiring

    wiring = Wiring.connect(settings, role)
    try:
        yield wiring
    except refused as error:
        raise click.ClickException(str(error)) from None
    except redis.RedisError as error:
        raise click.ClickException(f"Redis (STREAMREC_REDIS_URL) is not reachable: {error}"
                                   ) from None
    finally:
        wiring.close()
