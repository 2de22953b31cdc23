"""``Users.<property>`` in filters against the real Kafka, Redis and worker: a user's
properties (``PUT /users/{user_id}``) decide what their lists may hold, on every list."""

from __future__ import annotations

from tests.api.conftest import wait_for
from tests.api.test_filters import _listed, _put_items, _register, _views


def test_users_properties_filter_every_list(client, run):
    items = {f"{run}-jazz": {"categories": ["Jazz"]},
             f"{run}-rock": {"categories": ["Rock"]},
             # A category of this run's own: the suite's other items outrank it on /popular.
             f"{run}-blues": {"categories": ["Blues", f"{run}-rated"],
                              "properties": {"rating": "R"}}}
    _put_items(client, items)
    # Everyone viewed everything: popular, and neighbours of each other.
    _views(client, {f"{run}-seed{n}": list(items) for n in range(3)})
    ann, kid = f"{run}-ann", f"{run}-kid"
    for user, properties in ((ann, {"genre": "Jazz", "age": 34}),
                             (kid, {"genre": "Rock", "age": 9})):
        assert client.put(f"/users/{user}", json={"properties": properties}).status_code == 202
    assert wait_for(lambda: _listed(client, "/popular", k=50))
    _views(client, {ann: [f"{run}-rock"], kid: [f"{run}-jazz"]})  # someone to recommend to

    mine = f"mine-{run}"
    _register(client, mine, 'INCLUDE ItemID WHERE Items.categories IN (Users.genre, "Blues")')
    adults = f"adults-{run}"
    _register(client, adults, 'EXCLUDE ItemID WHERE Items.rating = "R" AND Users.age < 18')
    ours = set(items)

    def listed(path: str, name: str, **query) -> set[str]:
        return set(_listed(client, path, name, k=50, **query)) & ours

    assert wait_for(lambda: listed("/popular", mine, user_id=ann)
                    == {f"{run}-jazz", f"{run}-blues"}, timeout=30)
    # kid's document may reach Redis a batch after ann's: wait for it as for hers.
    assert wait_for(lambda: listed("/popular", mine, user_id=kid)
                    == {f"{run}-rock", f"{run}-blues"}, timeout=30)
    assert listed("/popular", mine) == {f"{run}-blues"}  # nobody: Users.genre is no value
    assert listed(f"/items/{run}-rock/similar", mine, user_id=ann) == {
        f"{run}-jazz", f"{run}-blues"}
    assert set(_listed(client, "/recommendations", mine, user_id=ann, k=50,
                       model="cooccurrence")) <= {f"{run}-jazz", f"{run}-blues"}
    assert f"{run}-blues" in _listed(client, "/recommendations", mine, user_id=ann, k=50,
                                     model="cooccurrence")

    rated = f"{run}-rated"
    assert wait_for(lambda: listed("/popular", adults, user_id=ann, category=rated)
                    == {f"{run}-blues"}, timeout=30)
    assert listed("/popular", adults, user_id=kid, category=rated) == set()
    assert f"{run}-blues" not in _listed(client, "/recommendations", adults, user_id=kid,
                                         k=50, model="popular")


def test_a_users_expression_that_does_not_parse_names_the_position(client, run):
    answer = client.put(f"/admin/filters/bad-{run}", json={
        "expression": "INCLUDE ItemID WHERE Items.categories IN (Users.)"})
    assert answer.status_code == 422
    assert "expected a property name after Users., found ) at position 49" in answer.text
