"""Commands that run the roles: worker, api, simulate, and all of them locally (up)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import click
import orjson

from streamrec.cli.options import LOG_LEVELS, app_option, refuse_log_level
from streamrec.settings import get_settings


@click.command()
@click.option("--log-level", default="info", show_default=True,
              callback=refuse_log_level, help=f"One of {', '.join(LOG_LEVELS)}.")
@click.option("--version", "state_version", default=None, metavar="NAME",
              help="Keep this model version up to date (built by `streamrec rebuild`) "
                   "instead of the main state.")
@app_option
def worker(log_level: str, state_version: str | None, app_name: str) -> None:
    """Run a Faust worker that applies events to the recommendation state in Redis: the
    main worker keeps every app; with --version, that version of --app's state."""
    from streamrec.apps import AppError
    from streams.worker import run

    try:
        run(get_settings(), state_version, log_level, app_name)
    except AppError as error:
        raise click.ClickException(str(error)) from None


TOPICS_SECONDS = 15.0  # how long `streamrec api` tries to create or check the topics


@click.command()
@click.option("--workers", default=1, show_default=True, help="API processes.")
def api(workers: int) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from streamrec.connections import check_kafka
    from streamrec.kafka import ensure_topics
    from streamrec.shutdown import ROLE_STOP_SECONDS
    from streamrec.wiring import Wiring

    settings = get_settings()
    settings.load_api_keys()  # refused here in one line, not in each process's traceback
    # A wrong password or an untrusted certificate: one line here, before uvicorn starts
    # (the lifespan checks Redis again, however the app is started).
    Wiring.connect(settings, "API").close()
    asyncio.run(check_kafka(settings, "API"))
    # The topics, as streamrec asks for them, before any send: the API may come up before
    # the worker, and a send to a missing topic has the broker create it with its own
    # defaults where it allows that. Best effort: the worker creates and checks them too.
    try:  # bounded: a Kafka that does not answer yet must not hold the API back
        asyncio.run(asyncio.wait_for(ensure_topics(settings, "API"), TOPICS_SECONDS))
    except Exception as error:  # noqa: BLE001 - no right to create topics, Kafka away
        click.echo(f"streamrec api: could not create or check the topics ({error!r}); "
                   "the worker will", err=True)
    # The app and its HTTP protocol by import string, as uvicorn takes them (each of
    # ``workers`` processes imports them itself): nothing under streamrec/ imports api/.
    # Open streams (/metrics/stream) never end by themselves: cut them short on a stop, so
    # the lifespan's own shutdown runs within the role's bound.
    uvicorn.run("api.main:served_app", factory=True, host=settings.api_host,
                port=settings.api_port, workers=workers, log_level="warning",
                access_log=False, timeout_graceful_shutdown=int(ROLE_STOP_SECONDS / 2),
                http="api.server:BoundedHttpToolsProtocol",
                timeout_keep_alive=settings.keep_alive_seconds)


@click.command()
@click.option("--rate", default=100.0, show_default=True,
              help="Events per second (0 = as fast as possible).")
@click.option("--events", "count", default=None, type=int,
              help="Stop after this many (default: run forever).")
@click.option("--users", default=1000, show_default=True)
@click.option("--items", default=5000, show_default=True)
@click.option("--categories", default=20, show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option("--loop-api", default=None, metavar="URL",
              help="Also close the loop: simulated users request lists from this API and "
                   "click what their hidden tastes like.")
@click.option("--loop-rate", default=20.0, show_default=True, help="Loop requests per second.")
@click.option("--placement", default="home", show_default=True,
              help="Placement the loop asks; configured as a bandit among hybrid, mf and "
                   "popular unless it is configured already.")
@click.option("--to-file", "to_file", default=None, metavar="PATH",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Write --events events of --regime to this JSON Lines file instead of "
                   "Kafka: a dataset for `streamrec evaluate` and `streamrec tune`.")
@click.option("--regime", default="stable", show_default=True,
              type=click.Choice(["stable", "sessions", "trending", "longtail"]),
              help="With --to-file: stable tastes, sessions, trending news or a long-tail "
                   "shop (docs/evaluation.md).")
@click.option("--segments", is_flag=True,
              help="Users are mobile or desktop (a user property and a context key "
                   "`device` of each loop request); mobile lists earn most from the variant "
                   "popular, desktop ones from hybrid (docs/evaluation.md).")
def simulate(
    rate: float, count: int | None, users: int, items: int, categories: int, seed: int,
    loop_api: str | None, loop_rate: float, placement: str, to_file: Path | None,
    regime: str, segments: bool,
) -> None:
    """Produce a synthetic event stream (and its item catalog) into Kafka, or a dataset
    into a file (--to-file)."""
    import threading

    from streamrec.sim.simulator import Segments, Simulation, synthetic

    if to_file is not None:
        if count is None:
            raise click.UsageError("--to-file needs --events")
        with to_file.open("wb") as file:
            for event in synthetic(regime, count, seed):
                file.write(orjson.dumps(event) + b"\n")
        click.echo(f"simulate: wrote {count} {regime} events to {to_file}")
        return

    simulation = Simulation(users=users, items=items, categories=categories, seed=seed,
                            segments=Segments() if segments else None)
    if loop_api:
        from streamrec.sim.loop import ensure_demo_placement
        from streamrec.wiring import Wiring

        feedback = Wiring.connect(get_settings()).feedback()
        if ensure_demo_placement(feedback, placement, "streamrec simulate", time.time()):
            click.echo(f"simulate: configured placement {placement!r}: a bandit among "
                       "hybrid, mf and popular")
        threading.Thread(target=_close_the_loop, args=(simulation, loop_api, loop_rate,
                                                       placement, seed), daemon=True).start()
    sent = asyncio.run(_produce_simulation(simulation, rate, count))
    click.echo(f"simulate: sent {sent} events")


def _close_the_loop(simulation, api: str, rate: float, placement: str, seed: int) -> None:
    import urllib.parse
    import urllib.request

    from streamrec.sim.loop import run_loop

    key = get_settings().client_api_key
    headers = {} if key is None else {"X-API-Key": key}

    def fetch(user: str, where: str, context: dict | None = None) -> dict:
        query = urllib.parse.urlencode({"user_id": user, "placement": where,
                                        **({"context": orjson.dumps(context).decode()}
                                           if context else {})})
        request = urllib.request.Request(f"{api}/recommendations?{query}", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())

    def send(events: list[dict]) -> None:
        request = urllib.request.Request(f"{api}/events", data=orjson.dumps(events),
                                         headers={"Content-Type": "application/json", **headers})
        urllib.request.urlopen(request, timeout=10).close()

    while True:
        try:
            run_loop(simulation, fetch, send, 10**9, placement, rate=rate, seed=seed)
        except OSError as error:  # the API restarting, say: wait and go on
            logging.getLogger(__name__).warning("loop: %s; retrying in 2 s", error)
            time.sleep(2)


async def _produce_simulation(simulation, rate: float, count: int | None) -> int:
    from streamrec.kafka import ensure_topics
    from streamrec.kafka import producer as kafka_producer

    settings = get_settings()
    await ensure_topics(settings, "simulate")
    producer = kafka_producer(settings, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        for item in simulation.catalog.items():
            await producer.send(settings.items_topic, orjson.dumps(item),
                                key=item["item_id"].encode())
        if simulation.segments is not None:
            for user in simulation.user_documents():
                await producer.send(settings.users_topic, orjson.dumps(user),
                                    key=user["user_id"].encode())
        await producer.flush()
        started = time.monotonic()
        for event in simulation.events(count, start=time.time()):
            event["timestamp"] = time.time()  # live stream: the event happens now
            await producer.send(settings.events_topic, orjson.dumps(event),
                                key=event["user_id"].encode())
            sent += 1
            if rate > 0 and sent % max(1, int(rate / 20)) == 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


@click.command()
@click.option("--run-dir", default=".streamrec", show_default=True,
              type=click.Path(path_type=Path),
              help="Logs, keys and every service's data (the worker's included) go here.")
@click.option("--rate", default=50.0, show_default=True, help="Simulated events per second.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="The API's port (default: STREAMREC_API_PORT, else 8000, else a free one).")
def up(run_dir: Path, rate: float, port: int | None) -> None:
    """Everything locally: Kafka and Redis (unless configured), worker, API, trainer and
    simulator.
    Whatever fails, or on Ctrl-C or SIGTERM, it stops everything it started."""
    from streamrec.local import up as stack

    try:
        stack.run(run_dir, rate, port, click.echo)
    except stack.UpFailed as error:
        raise click.ClickException(str(error)) from None
