"""The arena, short, through the real Kafka, Redis, worker and API: a bandit placement
holds the streaming ``popular`` and the batch ``lists:truth`` (the simulator's ground
truth, imported as Personalize output), and moves the traffic to the batch variant, the
truly better one, from the clicks the worker credits."""

from __future__ import annotations

import orjson

from streamrec import lists
from streamrec.measure.arena import BATCH, arena_placement, describe, run_arena, truth_lists
from streamrec.sim.simulator import Simulation
from streamrec.wiring import Wiring
from tests.api.conftest import wait_for

ROUNDS, PER_ROUND = 3, 100  # the last two rounds are judged


def test_the_bandit_moves_traffic_to_the_better_batch_variant(client, api_settings, run,
                                                              tmp_path):
    simulation = Simulation(users=200, items=400, categories=10, seed=7, prefix=f"{run}-")
    events = list(simulation.events(800))
    for start in range(0, len(events), 50):
        assert client.post("/events", json=events[start:start + 50]).status_code == 202
    path = tmp_path / "truth.json.out"
    path.write_bytes(b"\n".join(orjson.dumps(row) for row in truth_lists(simulation)))
    wiring = Wiring.connect(api_settings)
    name = f"truth-{run}"
    try:
        imported = lists.import_file(wiring.list_sets(), name, path)
        assert imported.users == simulation.users and not imported.rejected.total
        placement = f"arena-{run}"
        assert client.put(f"/admin/placements/{placement}",
                          json=arena_placement(name)).status_code == 200
        assert wait_for(lambda: client.get("/recommendations", params={
            "user_id": simulation.user_id(0), "model": f"lists:{name}"}).json()["model"]
            == f"lists:{name}", timeout=30)

        def fetch(user: str, where: str) -> dict:
            response = client.get("/recommendations", params={"user_id": user,
                                                              "placement": where})
            assert response.status_code == 200, response.text
            return response.json()

        def send(reactions: list[dict]) -> None:
            assert client.post("/events", json=reactions).status_code == 202

        rounds = run_arena(simulation, fetch, send, placement, ROUNDS, PER_ROUND, seed=3,
                           report=lambda done: print(describe(done)))
        judged = [r.shares.get(BATCH, 0.0) for r in rounds[-2:]]
        assert min(judged) >= 0.7, [describe(r) for r in rounds]
        assert rounds[-1].rewarded[BATCH] > rounds[-1].rewarded["streaming"]
    finally:
        wiring.list_sets().delete(name)
        wiring.close()
