"""Messages the CLI prints keep their text: brackets in an error (``[Errno 111]``, ``[errno 2]``) are not
swallowed as rich markup."""

from __future__ import annotations

import pytest

from hubmirror.cli._app import fail, say


def test_errors_and_messages_keep_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    fail("127.0.0.1:1: registry unreachable (ClientConnectorError: [errno 111] Connect call failed)")
    say("tags: [latest] [/not-a-closing-tag]")
    err = " ".join(capsys.readouterr().err.split())
    assert "error: 127.0.0.1:1: registry unreachable (ClientConnectorError: [errno 111] Connect call failed)" in err
    assert "tags: [latest] [/not-a-closing-tag]" in err
