"""``infercycle replay`` as other tools call it: a subprocess reading a trace file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infercycle.api.resolver import resolve_policy
from infercycle.replay import MAX_LINE_BYTES, bounded_lines, main
from tests.tracegen import make_fleet, run_fleet, write_trace

HOURS = 2.5
STEP_S = 30.0


def replay(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infercycle.replay", *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )


def replay_in_process(
    capsys: pytest.CaptureFixture[str], *args: str | Path
) -> tuple[int, str, str]:
    """The same entry point the command runs, for the many error cases (no interpreter start)."""
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def leak_fleet() -> object:
    return make_fleet("leak", pods=5, degrading=1, seed=4, params={"onset": 600.0, "rate": 1024.0})


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "leak.jsonl"
    with path.open("w") as out:
        write_trace(out, leak_fleet(), HOURS, STEP_S)  # type: ignore[arg-type]
    return path


@pytest.fixture(scope="module")
def verdicts(trace: Path) -> list[dict[str, object]]:
    result = replay(trace)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_output_follows_the_contract(verdicts: list[dict[str, object]]) -> None:
    assert verdicts, "the leaking pod must be flagged"
    for line in verdicts:
        assert list(line) == ["t", "pod", "verdict", "reasons"]
        assert isinstance(line["t"], float)
        assert isinstance(line["pod"], str)
        assert line["verdict"] in ("degraded", "healthy")
        assert isinstance(line["reasons"], list)
        assert all(isinstance(reason, str) for reason in line["reasons"])
    first = verdicts[0]
    assert first["verdict"] == "degraded"
    assert first["pod"] == "pod-0000"
    reasons = first["reasons"]
    assert isinstance(reasons, list)
    assert reasons[0].startswith("memory-leak: memory growth ")
    times = [line["t"] for line in verdicts]
    assert times == sorted(times)  # type: ignore[type-var]


def test_replay_decides_exactly_as_the_live_loop(verdicts: list[dict[str, object]]) -> None:
    live = run_fleet(leak_fleet(), resolve_policy().health, HOURS, STEP_S)  # type: ignore[arg-type]
    replayed = {}
    for line in verdicts:
        if line["verdict"] == "degraded":
            replayed.setdefault(line["pod"], line["t"])
    assert replayed == live.first_degraded
    assert [line["reasons"] for line in verdicts[:1]] == [list(live.reasons["pod-0000"])]


def test_output_file_and_stdin(
    trace: Path, tmp_path: Path, verdicts: list[dict[str, object]]
) -> None:
    out = tmp_path / "verdicts.jsonl"
    result = replay(trace, "--output", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert [json.loads(line) for line in out.read_text().splitlines()] == verdicts
    piped = replay("-", stdin=trace.read_text())
    assert [json.loads(line) for line in piped.stdout.splitlines()] == verdicts


POLICY_SPEC = {"health": {"rules": [{"name": "memory-leak", "threshold": "8Gi"}]}}


@pytest.mark.parametrize(
    "document",
    [
        {
            "apiVersion": "infercycle.io/v1alpha1",
            "kind": "RecyclePolicy",
            "metadata": {"name": "lenient"},
            "spec": POLICY_SPEC,
        },
        POLICY_SPEC,
    ],
    ids=["resource", "spec"],
)
def test_policy_file_changes_the_decision(trace: Path, tmp_path: Path, document: object) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(document))
    result = replay(trace, "--policy", policy)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", "an 8Gi/h leak threshold lets a 1Gi/h leak through"


def test_an_empty_trace_has_no_verdicts(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = replay(empty)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


GOOD = '{"t": 0, "pod": "a", "signals": {"cpu": 1.0}}'


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([GOOD, GOOD.replace("0", "15", 1), "{not json"], ":3: not valid JSON"),
        ([GOOD, '{"pod": "a", "signals": {}}'], ":2: missing field 't'"),
        (['{"t": 0, "signals": {}}'], ":1: missing field 'pod'"),
        (['{"t": 0, "pod": "a"}'], ":1: missing field 'signals'"),
        (['{"t": "soon", "pod": "a", "signals": {}}'], ":1: field 't' must be a number"),
        (['{"t": 0, "pod": "", "signals": {}}'], ":1: field 'pod' must be a non-empty string"),
        (['{"t": 0, "pod": "a", "signals": []}'], ":1: field 'signals' must be an object"),
        (['{"t": 0, "pod": "a", "signals": {"cpu": "high"}}'], ":1: signal 'cpu' must be a number"),
        (['{"t": 0, "pod": "a", "signals": {"cpu": true}}'], ":1: signal 'cpu' must be a number"),
        (['{"t": 0, "pod": "a", "signals": {"cpu": NaN}}'], ":1: signal 'cpu' must be a number"),
        (["[1, 2]"], ":1: expected a JSON object"),
        ([GOOD.replace("0", "30", 1), GOOD], ":2: time goes backwards: t=0 after t=30"),
        ([GOOD, GOOD], ":2: pod 'a' appears twice at t=0"),
        (
            ['{"t": 0, "pod": "a", "signals": {"memory": -1048576}}'],
            ":1: signal 'memory' is -1048576, but it is an amount",
        ),
        (
            ['{"t": 0, "pod": "a", "signals": {"cpu": -0.5}}'],
            ":1: signal 'cpu' is -0.5, but it is an amount",
        ),
        (['{"t": 0, "pod": "a", "signals": {"cpu": 1' + "9" * 5000 + "}}"], ":1: a number is too"),
        (['{"t": 1' + "0" * 5000 + ', "pod": "a", "signals": {}}'], ":1: a number is too long"),
        (
            ['{"t": 0, "pod": "a", "signals": {"memroy": 1.0, "latnecy": 2.0}}'],
            "no rule reads any signal of the trace (latnecy, memroy)",
        ),
    ],
)
def test_malformed_traces_name_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, stdout, stderr = replay_in_process(capsys, path)
    assert code == 2
    assert message in stderr
    assert str(path) in stderr
    assert stdout == ""


def test_the_command_reports_malformed_input_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{GOOD}\n{{not json\n")
    result = replay(path)
    assert result.returncode == 2
    assert f"{path}:2: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_invalid_utf8_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "binary.jsonl"
    path.write_bytes(GOOD.encode() + b"\n\xff\xfe\n")
    code, _, stderr = replay_in_process(capsys, path)
    assert code == 2
    assert ":2: not UTF-8 text" in stderr


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {
                "kind": "RecyclePolicy",
                "spec": {"health": {"rules": [{"name": "x", "threshld": "1"}]}},
            },
            "spec.health.rules[0].threshld: unknown field",
        ),
        ({"health": {"quorum": 0}}, "health.quorum: Input should be greater than or equal to 1"),
        ({"kind": "InferenceDeployment", "spec": {}}, "kind is 'InferenceDeployment'"),
        (
            {"health": {"rules": [{"name": "new-rule", "signal": "cpu"}]}},
            "health.rules[new-rule]: missing kind, threshold, window",
        ),
        ("- just\n- a list\n", "expected a RecyclePolicy"),
        ("health: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_policies_are_refused_with_the_field_path(
    trace: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    document: object,
    message: str,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    code, stdout, stderr = replay_in_process(capsys, trace, "--policy", policy)
    assert code == 2
    assert message in stderr
    assert stdout == ""


def test_the_command_refuses_an_unknown_policy_field(trace: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"spec": {"health": {"quorom": 2}}}))
    result = replay(trace, "--policy", policy)
    assert result.returncode == 2
    assert f"{policy}: spec.health.quorom: unknown field" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_files(tmp_path: Path, trace: Path) -> None:
    result = replay(tmp_path / "absent.jsonl")
    assert result.returncode == 2
    assert "absent.jsonl: no such trace file" in result.stderr
    result = replay(trace, "--policy", tmp_path / "absent.yaml")
    assert result.returncode == 2
    assert "absent.yaml: no such policy file" in result.stderr
    assert "Traceback" not in result.stderr


def test_in_process_main(trace: Path, tmp_path: Path, verdicts: list[dict[str, object]]) -> None:
    out = tmp_path / "out.jsonl"
    assert main([str(trace), "--output", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == verdicts


# -- restart fields -----------------------------------------------------------------------------


def restart_trace(path: Path, *, with_fields: bool) -> Path:
    """Four pods; one is OOM-killed at 1h and at 2h (reported in the optional fields)."""
    lines = []
    for step in range(1, 3 * 120):
        t = step * 30.0
        for index in range(4):
            record: dict[str, object] = {
                "t": t,
                "pod": f"llm-{index}",
                "signals": {"cpu": 2.0, "memory": 12 * 2**30, "request_rate": 3.0},
            }
            if with_fields:
                kills = int(t >= 3600) + int(t >= 7200) if index == 0 else 0
                record["restarts"] = kills
                if kills:
                    record["last_terminated_reason"] = "OOMKilled"
                    record["last_terminated_at"] = 3600.0 * kills - 5
            lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_restart_fields_report_oom_kills_to_the_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = restart_trace(tmp_path / "ooms.jsonl", with_fields=True)
    code, out, err = replay_in_process(capsys, trace)
    assert code == 0, err
    changes = [json.loads(line) for line in out.splitlines()]
    assert [(c["pod"], c["verdict"]) for c in changes] == [("llm-0", "degraded")]
    assert changes[0]["t"] == 7200.0
    assert any(reason.startswith("oom-kills:") for reason in changes[0]["reasons"])


def test_a_trace_without_restart_fields_replays_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = restart_trace(tmp_path / "plain.jsonl", with_fields=False)
    code, out, err = replay_in_process(capsys, trace)
    assert (code, out, err) == (0, "", "")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"restarts": -1}, "field 'restarts' must be a whole number"),
        ({"restarts": 1.5}, "field 'restarts' must be a whole number"),
        ({"restarts": 1, "last_terminated_reason": 3}, "'last_terminated_reason' must be"),
        ({"restarts": 1, "last_terminated_at": "soon"}, "'last_terminated_at' must be a number"),
        ({"last_terminated_reason": "OOMKilled"}, "need 'restarts'"),
    ],
)
def test_malformed_restart_fields_are_refused_naming_the_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fields: dict[str, object], message: str
) -> None:
    trace = tmp_path / "bad.jsonl"
    record = {"t": 0.0, "pod": "llm-0", "signals": {"cpu": 1.0}, **fields}
    trace.write_text(json.dumps(record) + "\n")
    code, _, err = replay_in_process(capsys, trace)
    assert code == 2
    assert f"{trace}:1: " in err
    assert message in err


def test_help_documents_the_optional_trace_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("restarts", "last_terminated_reason", "last_terminated_at"):
        assert name in out


def test_a_custom_signal_may_be_negative(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "custom.jsonl"
    path.write_text('{"t": 0, "pod": "a", "signals": {"cpu": 1.0, "score": -3.5}}\n')
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "health": {
                    "queries": {"score": "score_metric"},
                    "rules": [
                        {
                            "name": "score-low",
                            "signal": "score",
                            "kind": "below",
                            "threshold": "0",
                            "window": "5m",
                        }
                    ],
                }
            }
        )
    )
    code, _, stderr = replay_in_process(capsys, path, "--policy", policy)
    assert code == 0, stderr


def test_signals_no_rule_reads_are_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "misspelt.jsonl"
    path.write_text('{"t": 0, "pod": "a", "signals": {"cpu": 1.0, "memroy": 5.0}}\n')
    code, _, stderr = replay_in_process(capsys, path)
    assert code == 0
    assert "warning:" in stderr
    assert "no rule reads memroy" in stderr


def test_a_line_without_end_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """As ``/dev/zero`` would be: bytes and no line break (here 3 MiB of them)."""
    path = tmp_path / "endless.jsonl"
    path.write_bytes(b"0" * (3 << 20))
    result = replay(path)
    assert result.returncode == 2
    assert f"{path}:1: line longer than {1 << 20} bytes" in result.stderr
    assert "Traceback" not in result.stderr
    with Path("/dev/zero").open("rb") as endless:
        first = next(bounded_lines(endless))
        assert len(first) == MAX_LINE_BYTES + 1  # read no further than the limit
