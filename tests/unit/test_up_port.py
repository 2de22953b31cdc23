"""Where ``streamrec up`` puts the API: the port asked for (``--port``, else
``STREAMREC_API_PORT``) or an error naming it when taken; 8000, else a free port it names
(``tests/integration/test_up.py`` runs the whole of ``up`` with 8000 taken)."""

from __future__ import annotations

import socket

import pytest

from streamrec.local.services import free_port
from streamrec.local.up import UpFailed, choose_api_port


def test_the_port_asked_for_is_the_apis_and_needs_no_note():
    port = free_port()
    assert choose_api_port({}, port) == (port, None)
    assert choose_api_port({"STREAMREC_API_PORT": str(port)}, None) == (port, None)
    other = free_port()
    assert choose_api_port({"STREAMREC_API_PORT": str(other)}, port) == (port, None)


def test_a_port_asked_for_that_is_taken_is_refused_naming_where_it_came_from():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        with pytest.raises(UpFailed, match=rf"port {taken} \(--port\) is taken"):
            choose_api_port({}, taken)
        with pytest.raises(UpFailed, match=rf"port {taken} \(STREAMREC_API_PORT\) is taken"):
            choose_api_port({"STREAMREC_API_PORT": str(taken)}, None)
