from __future__ import annotations

from pathlib import Path

import pytest

from infercycle.agent.config import ConfigError, parse_config
from infercycle.agent.server import main

BASE = ["--server-process", "vllm serve", "--token-file", "/run/token"]


def test_flags_default_to_environment_variables() -> None:
    config = parse_config(
        [],
        {
            "INFERCYCLE_AGENT_SESSION_HOOK": "http://127.0.0.1:8000/sessions",
            "INFERCYCLE_AGENT_SERVER_PROCESS": "vllm serve",
            "INFERCYCLE_AGENT_TOKEN_FILE": "/run/token",
            "INFERCYCLE_AGENT_KEEP": "5",
            "INFERCYCLE_AGENT_MAX_SIZE": "1Gi",
            "INFERCYCLE_AGENT_GRACE_PERIOD": "12.5",
            "POD_UID": "0f3c",
        },
    )
    assert config.source == "hook"
    assert (config.keep, config.max_size_bytes, config.grace_period) == (5, 2**30, 12.5)
    assert config.pod_uid == "0f3c"
    assert (config.host, config.port) == ("0.0.0.0", 8089)
    assert config.checkpoint_dir == Path("/var/lib/infercycle/sessions")


def test_flags_win_over_the_environment() -> None:
    config = parse_config(
        [*BASE, "--session-dir", "/data/sessions", "--keep", "2"],
        {"INFERCYCLE_AGENT_KEEP": "9"},
    )
    assert config.source == "dir"
    assert config.session_dir == Path("/data/sessions")
    assert config.keep == 2
    assert config.max_size_bytes == 256 * 2**20


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        ([*BASE], "exactly one state source"),
        ([*BASE, "--session-dir", "/d", "--session-hook", "http://x/s"], "exactly one"),
        ([*BASE, "--session-hook", "ftp://x/s"], "not an http"),
        (["--session-dir", "/d", "--token-file", "/t"], "--server-process"),
        (["--session-dir", "/d", "--server-process", "x"], "--insecure-no-auth"),
    ],
)
def test_settings_that_cannot_work_are_refused(argv: list[str], phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase):
        parse_config(argv, {})


def test_insecure_mode_needs_no_token() -> None:
    config = parse_config(
        ["--session-dir", "/d", "--server-process", "x", "--insecure-no-auth"], {}
    )
    assert config.token_file is None
    from_env = parse_config(
        ["--session-dir", "/d", "--server-process", "x"],
        {"INFERCYCLE_AGENT_INSECURE_NO_AUTH": "true"},
    )
    assert from_env.token_file is None


def test_bad_values_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--session-dir", "/d", "--max-size", "lots"]) == 2
    assert "not a Kubernetes quantity" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "INFERCYCLE_AGENT_GRACE_PERIOD" in capsys.readouterr().out
