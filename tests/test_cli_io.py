"""``buildkit produce`` / ``consume`` / ``replay`` as a user runs them, bad input included."""

from __future__ import annotations

import json

import pytest

from buildkit.catalog import default_catalog
from buildkit.topics import apply_topics

TOPIC = "bar.tasks.results"


@pytest.fixture(scope="module", autouse=True)
def catalog_topics(settings):
    apply_topics(settings, default_catalog())


def result_json(task_id: str, **extra) -> dict:
    body = {
        "task_id": task_id,
        "agent": "test-generator",
        "status": "SUCCEEDED",
        "metrics": {"coverage": 91.5},
        "started_at": "2026-11-25T10:00:00Z",
        "finished_at": "2026-11-25T10:00:03.250Z",
    }
    body.update(extra)
    return body


def consume_all(cli, *extra: str) -> list[dict]:
    done = cli("consume", TOPIC, "--from-beginning", *extra)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def mine(rows: list[dict], prefix: str) -> list[dict]:
    return [r for r in rows if r["value"]["task_id"].startswith(prefix)]


def test_produce_then_consume_round_trips_values_keys_and_headers(cli, prefix, tmp_path):
    lines = [json.dumps(result_json(f"{prefix}-{n}")) for n in range(3)]
    envelope = {
        "key": f"{prefix}-custom",
        "value": result_json(f"{prefix}-3"),
        "headers": {"x-team": "platform"},
    }
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join([*lines, "", json.dumps(envelope)]) + "\n")
    done = cli("produce", TOPIC, "--file", str(source))
    assert done.returncode == 0, done.stderr
    assert "4 record(s) acknowledged" in done.stderr
    rows = mine(consume_all(cli), prefix)
    assert sorted(r["value"]["task_id"] for r in rows) == [f"{prefix}-{n}" for n in range(4)]
    by_id = {r["value"]["task_id"]: r for r in rows}
    assert by_id[f"{prefix}-0"]["key"] == f"{prefix}-0"  # default key: the catalog's key field
    assert by_id[f"{prefix}-3"]["key"] == f"{prefix}-custom"
    assert by_id[f"{prefix}-3"]["headers"]["x-team"] == "platform"
    assert by_id[f"{prefix}-0"]["value"]["finished_at"] == "2026-11-25T10:00:03.250Z"
    assert by_id[f"{prefix}-0"]["value"]["metrics"] == {"coverage": 91.5}
    # What consume prints, produce takes back (stdin this time).
    again = cli(
        "produce",
        TOPIC,
        input=json.dumps(by_id[f"{prefix}-3"] | {"value": result_json(f"{prefix}-4")}),
    )
    assert again.returncode == 0, again.stderr
    assert f"{prefix}-4" in {r["value"]["task_id"] for r in consume_all(cli)}


def test_one_invalid_record_means_nothing_is_sent(cli, prefix, tmp_path):
    good = json.dumps(result_json(f"{prefix}-ok"))
    wrong_type = json.dumps(result_json(f"{prefix}-bad", agent=42))
    bad_enum = json.dumps(result_json(f"{prefix}-bad2", status="MAYBE"))
    missing = json.dumps({"task_id": f"{prefix}-bad3"})
    source = tmp_path / "mixed.jsonl"
    source.write_text(
        "\n".join([good, wrong_type, "{not json", bad_enum, missing, "[1, 2]"]) + "\n"
    )
    done = cli("produce", TOPIC, "--file", str(source))
    assert done.returncode == 1
    err = done.stderr
    assert "nothing was sent" in err and "Traceback" not in err
    assert f'{source}:2: field "agent": Input should be a valid string' in err
    assert f"{source}:3: malformed JSON" in err
    assert f'{source}:4: field "status"' in err
    assert f'{source}:5: field "agent": Field required' in err
    assert f"{source}:6: expected a JSON object, got list" in err
    assert mine(consume_all(cli), prefix) == []


def test_dry_run_validates_and_sends_nothing(cli, prefix, tmp_path):
    source = tmp_path / "array.json"
    source.write_text(
        json.dumps([result_json(f"{prefix}-a"), result_json(f"{prefix}-b")], indent=2)
    )
    done = cli("produce", TOPIC, "--file", str(source), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "2 record(s) valid" in done.stderr
    assert mine(consume_all(cli), prefix) == []


def test_record_over_the_size_limit_is_reported_and_nothing_sent(cli, prefix, tmp_path):
    huge = {
        "event_id": f"{prefix}-big",
        "kind": "push",
        "occurred_at": "2026-11-25T10:00:00Z",
        "received_at": "2026-11-25T10:00:00Z",
        "raw_json": "x" * 1_500_000,
    }
    small = dict(huge, event_id=f"{prefix}-small", raw_json="{}")
    source = tmp_path / "big.jsonl"
    source.write_text(json.dumps(small) + "\n" + json.dumps(huge) + "\n")
    done = cli("produce", "bar.gitlab.events", "--file", str(source))
    assert done.returncode == 1
    assert f"{source}:2: record is about" in done.stderr
    assert "over the 1000000-byte limit" in done.stderr


def test_unknown_topic_is_named_with_a_suggestion(cli):
    done = cli("produce", "bar.task.results", input="{}")
    assert done.returncode == 1
    assert 'topic "bar.task.results" is not in the topic catalog' in done.stderr
    assert "did you mean bar.tasks.results" in done.stderr
    missing = cli("consume", "no.such.topic", "--from-beginning")
    assert missing.returncode == 1
    assert 'topic "no.such.topic" does not exist on' in missing.stderr


def test_consume_options_max_offset_partition_and_group(cli, prefix, tmp_path):
    source = tmp_path / "in.jsonl"
    # One key, so every record lands on one partition, in order.
    rows = [{"key": prefix, "value": result_json(f"{prefix}-{n}")} for n in range(6)]
    source.write_text("\n".join(json.dumps(r) for r in rows))
    assert cli("produce", TOPIC, "--file", str(source)).returncode == 0
    everything = mine(consume_all(cli), prefix)
    partition = everything[0]["partition"]
    offsets = [r["offset"] for r in everything]
    assert len(everything) == 6 and offsets == sorted(offsets)
    first = cli(
        "consume", TOPIC, "--partition", str(partition), "--offset", str(offsets[2]), "--max", "2"
    )
    assert [json.loads(line)["offset"] for line in first.stdout.splitlines()] == offsets[2:4]
    group = f"{prefix}-grp"
    one = cli("consume", TOPIC, "--group", group, "--from-beginning")
    assert one.returncode == 0, one.stderr
    assert len(mine([json.loads(x) for x in one.stdout.splitlines()], prefix)) == 6
    # The group committed what it printed: nothing new for a second run.
    two = cli("consume", TOPIC, "--group", group)
    assert two.returncode == 0, two.stderr
    assert mine([json.loads(x) for x in two.stdout.splitlines()], prefix) == []


def test_replay_cli_writes_exact_range_with_filter(cli, prefix, tmp_path):
    source = tmp_path / "in.jsonl"
    rows = [
        {
            "key": prefix,
            "value": result_json(f"{prefix}-{n}", status="FAILED" if n % 2 else "SUCCEEDED"),
        }
        for n in range(8)
    ]
    source.write_text("\n".join(json.dumps(r) for r in rows))
    assert cli("produce", TOPIC, "--file", str(source)).returncode == 0
    everything = mine(consume_all(cli), prefix)
    p, offsets = everything[0]["partition"], [r["offset"] for r in everything]
    out = tmp_path / "failed.jsonl"
    done = cli(
        "replay",
        TOPIC,
        "--partition",
        str(p),
        "--from",
        str(offsets[1]),
        "--to",
        str(offsets[6]),
        "--filter",
        "status=FAILED",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    got = [json.loads(line)["value"]["task_id"] for line in out.read_text().splitlines()]
    assert got == [f"{prefix}-1", f"{prefix}-3", f"{prefix}-5"]
    both = cli("replay", TOPIC, "--out", "x", "--to-topic", "y")
    assert both.returncode == 1 and "exactly one of --out FILE or --to-topic TOPIC" in both.stderr
