"""``streamrec trainer``: the role that retrains ``ease`` and ``ials`` on a schedule."""

from __future__ import annotations

import click

from streamrec.cli.options import check_app


def _models(context: click.Context, option: click.Parameter, value: str | None
            ) -> list[str] | None:
    if value is None:
        return None
    from recommender.base import BATCH_MODELS

    chosen = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BATCH_MODELS]
    if unknown or not chosen:
        raise click.BadParameter(f"{unknown or value!r}: one or more of "
                                 f"{', '.join(BATCH_MODELS)}, comma-separated")
    return chosen


@click.command()
@click.option("--app", "app_name", default="default", show_default=True, metavar="NAME",
              callback=check_app, help="The app whose runs this trains.")
@click.option("--all-apps", is_flag=True, help="Train every app (the log is read once).")
@click.option("--every", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
              help="Seconds between cycles (default: STREAMREC_TRAINER_EVERY_SECONDS).")
@click.option("--once", is_flag=True, help="One cycle, then exit (status 1 if it trained "
                                            "nothing).")
@click.option("--models", default=None, callback=_models, metavar="ease,ials",
              help="Which models (default: STREAMREC_TRAINER_MODELS).")
@click.option("--items", type=click.IntRange(min=2), default=None, metavar="N",
              help="Train on the N most interacted items (default: STREAMREC_TRAINER_ITEMS; "
                   "EASE at most STREAMREC_TRAINER_EASE_ITEMS).")
def trainer(app_name: str, all_apps: bool, every: float | None, once: bool,
            models: list[str] | None, items: int | None) -> None:
    """Retrain ease and ials from the retained events topic on a schedule, publish each
    run with its lineage and offline metrics, and promote it unless it is worse than the
    serving run (docs/trainer.md)."""
    from streamrec.apps import AppError
    from streamrec.settings import get_settings
    from streams import trainer as training

    settings = get_settings()
    app = None if all_apps else app_name
    chosen = models or settings.trainer_models
    if not once:
        training.run_forever(settings, app, chosen, every or settings.trainer_every_seconds,
                             items)
        return
    try:
        published, errors = training.cycle(settings, app, chosen, items)
    except (training.TrainerError, AppError) as error:
        raise click.ClickException(str(error)) from None
    for done in published:
        click.echo(done.describe())
    for error in errors:
        click.echo(f"error: {error}", err=True)
    if not published:
        raise SystemExit(1)
