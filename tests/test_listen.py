"""``driftwarden.listen.bind``: the listening socket of ``driftwarden api`` and ``driftwarden up``."""

from __future__ import annotations

import pytest

from driftwarden.errors import UserError
from driftwarden.listen import bind
from tests.conftest import run_cli


def test_port_0_is_resolved_at_once_and_a_busy_port_is_one_clear_error():
    first = bind("127.0.0.1:0", "--listen")
    try:
        port = first.getsockname()[1]
        assert port > 0
        with pytest.raises(UserError, match=rf"cannot listen on 127.0.0.1:{port} \(api.listen\): .*choose another"):
            bind(f"127.0.0.1:{port}", "api.listen")
    finally:
        first.close()


def test_an_address_that_is_not_host_port_names_the_option_and_the_form():
    with pytest.raises(UserError, match=r"--listen: expected HOST:PORT .* got 'localhost'"):
        bind("localhost", "--listen")
    result = run_cli("api", "--store", "chdb:///nonexistent-never-opened", "--listen", "localhost")
    assert result.returncode == 2 and "--listen: expected HOST:PORT" in result.stderr
