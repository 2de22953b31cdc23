"""Every Redis key streamrec uses. Call sites build keys with :func:`key`, never by hand.

Ids always form the last part of a key, so an id containing the separator cannot
collide with another key's structure.
"""

from __future__ import annotations

SEPARATOR = ":"

# ZSET item -> last interaction time (epoch milliseconds) * scripts.HISTORY_SPAN + a bit per
# scored event type the user had with the item, per user; one more member, the marker ""
# (score +inf), says the key has this layout (scripts.HISTORY_MARKER).
HISTORY = "hist"
NEIGHBOURS = "nbr"  # ZSET neighbour item -> decayed co-occurrence weight, per item
ITEM_COUNT = "cnt"  # ZSET item -> decayed weight of users' first touches (co-occurrence norm)
POPULAR = "pop"  # ZSET item -> decayed popularity, global
POPULAR_BY_CATEGORY = "popcat"  # ZSET item -> decayed popularity, per category
ITEM = "item"  # STRING JSON item properties, per item
USER = "user"  # STRING JSON user properties, per user
MF_USER = "mfu"  # STRING float16 bytes: a user's factor vector (constant 1 last)
MF_ITEM = "mfi"  # STRING float32 bytes: an item's factor vector (bias last)
MF_CHANGED = "mfchg"  # ZSET item -> time its factors last changed (serving refreshes from it)
IMPRESSION = "imp"  # STRING JSON impression, per recommendation id (expires)
CREDITED = "att"  # STRING marker: (recommendation id, item, event type) credited (expires)
REWARDED_LIST = "took"  # STRING marker: the list earned a reward already (expires)
VARIANT_COUNTERS = "vstats"  # HASH "variant|counter" -> count, per placement
OUTCOMES = "fbout"  # HASH reason -> reward events by attribution outcome: all, per placement
# ZSET feedback event waiting for its impression (recommender.attribution.waiting_entry) ->
# when it gives up (epoch seconds); written by the worker's APPLY with the batch's offsets.
FEEDBACK_WAITING = "fbwait"
PLACEMENTS = "placements"  # HASH placement -> JSON configuration (current version)
PLACEMENT_LOG = "plog"  # LIST JSON change records, newest first, per placement
FRESHNESS = "fresh"  # LIST recent freshness samples (ms, record time -> state applied)
OFFSETS = "offsets"  # HASH "topic:partition" -> last offset applied to the state
STATS = "stats"  # HASH counters written by the worker: events applied, "blend:*" source tally
# (field duplicates: events skipped as repeats of an event_id, /metrics'
# streamrec_events_duplicate_total)
WITHDRAWN = "withdrawn"  # ZSET item -> time from which it is never shown (0: unavailable/deleted)
# STRING a token written anew by every change of WITHDRAWN, in the same call: an API
# process screens from its copy of WITHDRAWN while the token it reads is the copy's.
WITHDRAWN_VERSION = "withdrawnv"
# HASH item -> the user's event types with it other than the scored ones (those are in hist's
# scores), per user, trimmed with hist; absent when the user has no other type.
EVENT_TYPES = "evtypes"
# Operational counters for /metrics, shared by every version (not recommendation state):
REJECTS = "rejects"  # HASH "topic|reason" -> records the worker dead-lettered
FRESHNESS_HISTOGRAM = "freshh"  # HASH bucket upper bound (s) or sum/count -> freshness tally
FILTERS = "filters"  # HASH filter name -> JSON definition (expression, version, time)
# HASH event id -> "partition:offset" of the record that applied it, per bucket (a day of
# reception time; recommender.once): the ids a window remembers, in the global state's slot.
SEEN = "seen"
SEEN_BUCKETS = "seenbk"  # ZSET bucket number -> itself: the SEEN buckets that exist
# HASH event type -> its weight: the types every role accepts (API, import, worker, rebuild),
# seeded from STREAMREC_EVENT_WEIGHTS when absent, changed by the admin API or the CLI.
EVENT_WEIGHTS = "evweights"
APPLIED = "applied"  # HASH "topic:partition" -> last offset one hash-tag group applied (cluster)
# HASH decayed key's kind and id (landmark_field) -> its landmark, epoch seconds: a score S
# of that key means the decayed value S * 2 ** ((landmark - now) / half-life). In the slot
# of the keys it describes: the global one for pop, popcat:*, cnt; each item group's for
# its nbr:* (recommender.decay).
LANDMARKS = "lm"
# HASH model ranked outside the stream (ease, ials, lists:NAME) -> JSON card of what serves
# it now: {"model", "kind": "trained"|"imported", "run", "made_at", "lineage": {...},
# "hyperparameters": {...}, "offline": {"recall@10", "ndcg@10", "users", "slice"} | null}.
# Written by the trainer and by `streamrec lists import`; read by reports (the arena).
MODEL_CARDS = "mcards"

# Allocation strategies that learn per user group or context (issue 20, docs/bandits.md):
# HASH field -> float, per placement, shared by every version like the variant counters.
# clustered: "variant|s<k>|n" / "variant|s<k>|r" membership-weighted lists shown / rewarded
# in segment k; contextual: "variant|A|i|j" (i <= j) and "variant|b|i", the ridge
# regression's sums; both: "variant|n", the updates since the variant's fields were last
# halved (at the cap, so they stay bounded); "changes": updates so far (readers skip an
# unchanged state). Written by the worker's impression and credit scripts, read by the
# API's allocation refresher.
BANDIT_STATE = "bstate"
# Imported list sets (`streamrec lists import`, streamrec.storage.list_sets), shared by the
# versions of an app. A set's lists are written under a fresh generation, then one HSET of
# LIST_SETS switches readers to it: a reader sees the old set or the new one, never a mix.
LIST_SETS = "lists"  # HASH set name -> JSON pointer: its current generation and metadata
# HASH "name|generation" -> JSON {"state": "writing"|"retired", "at"}: generations not (or no
# longer) current, so that an import killed midway, or a grace cut short, is cleaned later.
LIST_GENERATIONS = "listgens"
# HASH owner (user, or item for similar items) -> packed list (orjson item ids, newline,
# float32 scores), per set, generation and bucket ("u3", "i7": crc32 % SHARDS of the owner;
# under a tagged prefix each bucket is in its group's hash tag, spread over the cluster).
LIST_ROWS = "lrows"
# Runs of the models trained on a schedule (streamrec trainer; streamrec.storage.trained_runs),
# under each app's base prefix, beside what every version shares. A run is "MODEL@N".
RUNS = "runs"  # HASH run number -> JSON record (lineage, metrics, status, chunks), per model
RUN_NUMBERS = "runseq"  # HASH model -> the last run number given
RUN_ARTIFACT = "runart"  # STRING one chunk of a run's artifact (numpy .npz bytes), per run, chunk
RUN_SERVING = "runserve"  # HASH model -> the run number that serves it
RUN_LOG = "runlog"  # LIST JSON promote/rollback records of runs, newest first, per model

# STRING set while `streamrec snapshot save` copies a version's state: APPLY changes nothing
# while its call's one exists (the worker waits), so the copy is one point in time. One
# per slot a call writes: the global one and, under a tagged prefix, each group's. Not
# state: a snapshot never copies it.
PAUSE = "pause"

USER_DELETIONS = "userdel"  # ZSET user -> number of the deletion that last deleted them
CATALOG_CHANGED = "itemchg"  # ZSET item -> time its document last changed (content index)
VERSIONS = "versions"  # HASH version name -> JSON (settings overrides, status, created)
SERVING = "serving"  # STRING the version that serves (absent: main)
SERVING_LOG = "servlog"  # LIST JSON promote/rollback records, newest first
# The app registry (streamrec.apps), under the deployment's base prefix only:
APPS = "apps"  # HASH app name -> JSON (settings overrides, quotas, created)
APP_KEYS = "appkeys"  # HASH SHA-256 of an API key -> JSON {"app", "role", "created_at"}
# HASH app name -> when it was deleted (epoch seconds): the worker drops the records of a
# deleted app (counted in APP_RECORDS_DROPPED) rather than dead-letter them.
APPS_DELETED = "appsdel"
# HASH app name -> when its deletion finished unlinking its state: a worker that wrote the
# app's state during the deletion waits for this before it removes what it put back, so the
# deletion counts every key that was there.
APPS_REMOVED = "appsrm"
APP_RECORDS_DROPPED = "appdrop"  # HASH "topic|app" -> records of a deleted app dropped

# The recommendation state proper: what a model version owns under its own prefix. Every
# other kind (catalog, filters, placements, feedback, versions) is shared by all versions
# and stays under the base prefix.
STATE = (HISTORY, NEIGHBOURS, ITEM_COUNT, POPULAR, POPULAR_BY_CATEGORY, MF_USER, MF_ITEM,
         MF_CHANGED, OFFSETS, STATS, FRESHNESS, EVENT_TYPES, APPLIED, LANDMARKS, SEEN,
         SEEN_BUCKETS)
# The forward-decayed sorted sets, each with a landmark in LANDMARKS.
DECAYED = (POPULAR, POPULAR_BY_CATEGORY, ITEM_COUNT, NEIGHBOURS)

# Redis Cluster layout. A prefix written as a hash tag ("{sr}") puts every key under it in
# one slot: the catalog, the feedback and a version's global state (popularity, offsets),
# which scripts and transactions touch together. The per-user and per-item state, the bulk
# of the memory, is spread over SHARDS groups of users and SHARDS groups of items instead;
# each group is a hash tag of its own ("{sr/u7}", "{sr/i7}"), so a batch is applied as one
# script per group. SHARDS is part of the key layout: changing it means a rebuild.
SHARDS = 16
USER_SHARDED = (HISTORY, MF_USER, EVENT_TYPES)
ITEM_SHARDED = (NEIGHBOURS, MF_ITEM)


def is_tagged(prefix: str) -> bool:
    """True for a prefix written as a hash tag (the Redis Cluster layout).

    >>> is_tagged("{sr}"), is_tagged("sr")
    (True, False)
    """
    return prefix.startswith("{") and prefix.endswith("}")


def tagged(prefix: str) -> str:
    """``prefix`` as a hash tag (unchanged when it is one).

    >>> tagged("sr"), tagged("{sr}")
    ('{sr}', '{sr}')
    """
    return prefix if is_tagged(prefix) else "{" + prefix + "}"


def group_prefix(prefix: str, group: str) -> str:
    """The prefix of one group of a tagged prefix: a hash tag of its own.

    >>> group_prefix("{sr}", "u7")
    '{sr/u7}'
    """
    return "{" + prefix[1:-1] + "/" + group + "}"


def group_patterns(prefix: str, kind: str | None = None, groups: str = "ui") -> list[str]:
    """SCAN patterns for the group keys of a tagged prefix (none for a plain prefix): of
    every kind or of ``kind``, in the user groups ("u"), the item groups ("i") or both.

    >>> group_patterns("{sr}")
    ['{sr/u*}:*', '{sr/i*}:*']
    >>> group_patterns("{sr}", HISTORY, groups="u")
    ['{sr/u*}:hist:*']
    """
    if not is_tagged(prefix):
        return []
    tail = "*" if kind is None else escape(kind + SEPARATOR) + "*"
    return ["{" + escape(prefix[1:-1]) + "/" + group + "*}:" + tail for group in groups]


def key(prefix: str, kind: str, *parts: str) -> str:
    """Build the key of ``kind`` under ``prefix``; ``parts`` are ids and come last.

    >>> key("sr", NEIGHBOURS, "item:1")
    'sr:nbr:item:1'
    >>> key("sr", POPULAR)
    'sr:pop'
    """
    return SEPARATOR.join((prefix, kind, *parts))


def landmark_field(kind: str, *parts: str) -> str:
    """The LANDMARKS field of a decayed key: its kind and id, without the prefix (the
    hash is in the key's slot already).

    >>> landmark_field(POPULAR), landmark_field(NEIGHBOURS, "item:1")
    ('pop', 'nbr:item:1')
    """
    return SEPARATOR.join((kind, *parts))


def landmark_keys(prefix: str) -> list[str]:
    """Every LANDMARKS hash of a version's state: the global one and, under a tagged
    prefix, each item group's.

    >>> landmark_keys("sr")
    ['sr:lm']
    >>> landmark_keys("{sr}")[:2]
    ['{sr}:lm', '{sr/i0}:lm']
    """
    groups = [group_prefix(prefix, f"i{n}") for n in range(SHARDS)] if is_tagged(prefix) else []
    return [key(prefix, LANDMARKS)] + [key(group, LANDMARKS) for group in groups]


def pause_keys(prefix: str) -> list[str]:
    """Every PAUSE key of a version's state: the global one and, under a tagged prefix,
    each user and item group's.

    >>> pause_keys("sr")
    ['sr:pause']
    >>> pause_keys("{sr}")[:2], len(pause_keys("{sr}"))
    (['{sr}:pause', '{sr/u0}:pause'], 33)
    """
    groups = [group_prefix(prefix, f"{kind}{n}") for kind in "ui" for n in range(SHARDS)
              ] if is_tagged(prefix) else []
    return [key(prefix, PAUSE)] + [key(group, PAUSE) for group in groups]


def pattern(prefix: str, kind: str) -> str:
    """A SCAN ``MATCH`` pattern for every key of ``kind`` under ``prefix``, whatever its id.

    The prefix and kind match literally (glob characters in them are escaped).

    >>> pattern("sr", HISTORY)
    'sr:hist:*'
    >>> pattern("a*b", HISTORY)
    'a\\\\*b:hist:*'
    """
    return escape(key(prefix, kind, "")) + "*"


def escape(text: str) -> str:
    """``text`` as a literal in a SCAN ``MATCH`` pattern.

    >>> escape("a*b")
    'a\\\\*b'
    """
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
