"""Content similarity: hand-built catalogs, removal, exclusions, determinism."""

from __future__ import annotations

from recommender.content import ContentIndex, bucket, features

CATALOG = {
    "alien": {"categories": ["sci-fi", "horror"], "properties": {"title": "Alien"}},
    "aliens": {"categories": ["sci-fi", "action"], "properties": {"title": "Aliens"}},
    "alien3": {"categories": ["sci-fi", "horror"], "properties": {"title": "Alien 3"}},
    "heat": {"categories": ["crime"], "properties": {"title": "Heat", "brand": "Warner"}},
    "ronin": {"categories": ["crime", "action"], "properties": {"title": "Ronin"}},
}


def test_items_sharing_words_and_categories_rank_first():
    index = ContentIndex()
    index.upsert(CATALOG)
    ranked = [item for item, _ in index.similar("alien", 5)]
    assert ranked[0] == "alien3"  # same categories and a shared title word
    assert "heat" not in ranked  # nothing in common: cosine 0 is never a neighbour
    assert [item for item, _ in index.similar("heat", 5)] == ["ronin"]


def test_unknown_items_removal_exclusions_and_candidates():
    index = ContentIndex()
    index.upsert(CATALOG)
    assert index.similar("nope", 3) == []
    assert "alien3" not in dict(index.similar("alien", 5, exclude=["alien3"]))
    assert [i for i, _ in index.similar("alien", 5, among=["heat", "aliens"])] == ["aliens"]
    index.upsert({"alien3": None})
    assert "alien3" not in dict(index.similar("alien", 5))


def test_same_catalog_same_scores_in_any_order():
    first, second = ContentIndex(), ContentIndex()
    first.upsert(CATALOG)
    second.upsert(dict(reversed(list(CATALOG.items()))))
    assert first.similar("aliens", 4) == second.similar("aliens", 4)
    assert bucket("w:alien", 1 << 18) == bucket("w:alien", 1 << 18)


def test_features_read_categories_text_and_short_strings_only():
    terms = features({"categories": ["A"], "properties": {
        "title": "Red red wine", "colour": "Red", "price_band": 3, "tags": ["x y", "z"]}})
    assert terms == {"cat:a": 1, "w:red": 2, "w:wine": 1, "p:colour=red": 1, "w:x": 1,
                     "w:y": 1, "w:z": 1}


def test_reading_an_unchanged_document_again_keeps_the_built_matrix():
    index = ContentIndex()
    index.upsert(CATALOG)
    index.similar("alien", 2)
    built = index._matrix
    index.upsert({"alien": CATALOG["alien"]})  # the refresher's overlap reads it again
    assert index._matrix is built
    index.upsert({"alien": {"categories": ["crime"]}})
    assert index._matrix is None
