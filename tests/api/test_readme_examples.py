"""The README's curl examples, run against the real API (Kafka, Redis, worker): a ``curl``
command in a ``sh`` block followed by a ``# STATUS BODY`` line must get that status and that
JSON body, so what the README shows is what the API answers. ``"..."`` in a shown body
stands for any value (ids the API makes up)."""

from __future__ import annotations

import re
import shlex
import urllib.parse
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
ANSWER = re.compile(r"^# (\d{3}) (.+)$")


def examples(text: str) -> list[tuple[str, int, str]]:
    """Every ``(command, status, body)`` of the README's sh blocks: a command runs on over
    lines while a quote is open or a line ends with a backslash."""
    found = []
    for block in BLOCK.findall(text):
        command = pending = None  # a command awaiting its answer; one still open
        for line in block.splitlines():
            if pending is not None:
                pending += "\n" + line
            elif line.startswith("curl "):
                pending = line
            else:
                answer = ANSWER.match(line)
                if answer and command is not None:
                    found.append((command, int(answer[1]), answer[2]))
                command = None
                continue
            if not _open(pending):
                command, pending = pending, None
    return found


def _open(command: str) -> bool:
    if command.endswith("\\"):
        return True
    try:
        shlex.split(command)
    except ValueError:  # no closing quotation yet
        return True
    return False


def request(command: str) -> tuple[str, str, dict[str, str], bytes | None]:
    """The method, path with query, headers and body of a curl command, as curl sends
    them (``-d`` posts form data unless a Content-Type says otherwise)."""
    words = shlex.split(command.replace("\\\n", " "))[1:]
    method, headers, data, url, query = None, {}, None, None, []
    get = False
    while words:
        word = words.pop(0)
        if word == "-s":
            continue
        if word == "-G":
            get = True
        elif word == "-X":
            method = words.pop(0)
        elif word == "-H":
            name, _, value = words.pop(0).partition(":")
            headers[name.strip().lower()] = value.strip()
        elif word in ("-d", "--data", "--data-raw"):
            data = words.pop(0).encode()
        elif word == "--data-urlencode":
            name, _, value = words.pop(0).partition("=")
            query.append((name, value))
        elif word.startswith("http"):
            url = word
        else:
            raise AssertionError(f"the README test does not know curl's {word!r}: {command}")
    parts = urllib.parse.urlsplit(url)
    path = parts.path + ("?" + parts.query if parts.query else "")
    if query:
        path += ("&" if "?" in path else "?") + urllib.parse.urlencode(query)
    if data is not None and not get:
        headers.setdefault("content-type", "application/x-www-form-urlencoded")
    headers.pop("x-api-key", None)  # the session's API is open
    return method or ("POST" if data is not None and not get else "GET"), path, headers, data


def matches(shown, answered) -> bool:
    if shown == "...":
        return True
    if isinstance(shown, dict):
        return (isinstance(answered, dict) and shown.keys() == answered.keys()
                and all(matches(shown[key], answered[key]) for key in shown))
    if isinstance(shown, list):
        return (isinstance(answered, list) and len(shown) == len(answered)
                and all(matches(a, b) for a, b in zip(shown, answered, strict=True)))
    return shown == answered


README_EXAMPLES = examples((ROOT / "README.md").read_text())


def test_the_readme_has_the_examples_it_promises():
    statuses = {status for _, status, _ in README_EXAMPLES}
    assert {202, 415, 422} <= statuses, README_EXAMPLES
    paths = {request(command)[1].split("?")[0] for command, _, _ in README_EXAMPLES}
    assert {"/events", "/popular"} <= paths


@pytest.mark.parametrize(("command", "status", "body"), README_EXAMPLES,
                         ids=[f"{n}-{status}" for n, (_, status, _) in
                              enumerate(README_EXAMPLES)])
def test_a_readme_example_is_what_the_api_answers(client, command, status, body):
    method, path, headers, data = request(command)
    response = client.request(method, path, headers=headers, content=data)
    answered = response.json()
    assert (response.status_code, matches(orjson.loads(body), answered)) == (status, True), (
        f"the README shows\n# {status} {body}\nthe API answers\n# {response.status_code} "
        f"{orjson.dumps(answered).decode()}")
