"""A whole build on S3 (SeaweedFS): seeds from a glob of objects, credentials from a
Prefect AwsCredentials block and nowhere else, shards and manifest written back to S3.
The key and secret must appear in no log line, no written object and no run parameter."""

from __future__ import annotations

import io
import json
import os
import secrets

import pyarrow.parquet as pq
import pytest

from conftest import SEEDS, read_seeds, tiny_recipe_dict

pytestmark = [pytest.mark.engine, pytest.mark.s3]


@pytest.fixture
def no_env_credentials(monkeypatch):
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def seed_parts(seaweed) -> str:
    """Nine real seed tasks split over three JSONL objects, one broken line among them."""
    fs = seaweed.filesystem()
    records = read_seeds()[:9]
    prefix = f"{seaweed.bucket}/seeds-{secrets.token_hex(3)}"
    for i in range(3):
        lines = [json.dumps(r) for r in records[3 * i: 3 * i + 3]]
        if i == 1:
            lines.insert(1, '{"id": "broken", "instruction": ')
        fs.pipe(f"{prefix}/part-{i}.jsonl", ("\n".join(lines) + "\n").encode())
    fs.pipe(f"{prefix}/README.txt", b"not a seed file: the glob below does not match it")
    return f"s3://{prefix}/part-*.jsonl"


def save_block(name: str, seaweed, secret: str) -> None:
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    AwsCredentials(
        aws_access_key_id=seaweed.access_key, aws_secret_access_key=secret, region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=seaweed.endpoint_url),
    ).save(name, overwrite=True)


def flow_logs(flow_run_id, expect: str) -> str:
    """The run's logs as the API holds them (and its parameters); logs arrive in batches, so wait for `expect`."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + 180  # logs ship in batches; later on a busy machine
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            text = "\n".join(entry.message for entry in logs)
            if expect in text or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        params = client.read_flow_run(flow_run_id).parameters
    return text + json.dumps(params, default=str)


def test_build_from_and_to_s3_with_block_credentials_leaks_no_secret(prefect_api, seaweed, seed_parts, no_env_credentials, caplog):
    import logging

    from distillery.recipe import build_recipe
    from flows.distill import distill

    caplog.set_level(logging.DEBUG)  # every record that reaches the root logger, debug included
    save_block("distillery-test-s3", seaweed, seaweed.secret_key)
    out = f"s3://{seaweed.bucket}/built-{secrets.token_hex(3)}"
    data = tiny_recipe_dict(seed_parts, out)
    data["judge"]["enabled"] = False
    data["storage"] = {"credentials_block": "distillery-test-s3"}
    state = distill(build_recipe(data), return_state=True)
    result = state.result()

    s = result["summary"]
    assert s["rows_in"] == 10 and s["rejected_by_reason"].get("malformed_json") == 1
    assert s["rows_in"] == s["kept"] + s["rejected"]
    fs = seaweed.filesystem()
    root = out.removeprefix("s3://")
    manifest = json.loads(fs.cat(f"{root}/manifest.json"))
    kept = [r for e in manifest["shards"] for r in pq.read_table(io.BytesIO(fs.cat(f"{root}/{e['path']}"))).to_pylist()]
    assert len(kept) == s["kept"] == manifest["rows"]
    assert {r["seed_id"] for r in kept} <= {r["id"] for r in read_seeds()[:9]}
    assert manifest["recipe"]["storage"]["credentials_block"] == "distillery-test-s3"

    # The credentials appear nowhere: not in any object written, the logs, or the run's parameters.
    written = b"".join(fs.cat(p) for p in fs.find(root))
    logs = flow_logs(state.state_details.flow_run_id, f"published {out}")
    assert f"published {out}" in logs
    for secret in (seaweed.secret_key, seaweed.access_key):
        assert secret.encode() not in written
        assert secret not in caplog.text
        assert secret not in logs


def test_a_wrong_key_is_refused_with_a_clear_message(prefect_api, seaweed, seed_parts, no_env_credentials, tmp_path):
    from distillery.adapters.storage import StorageError
    from distillery.recipe import build_recipe
    from flows.distill import distill

    wrong = secrets.token_hex(16)
    save_block("distillery-test-wrong", seaweed, wrong)
    data = tiny_recipe_dict(str(SEEDS), f"s3://{seaweed.bucket}/never-written")
    data["storage"] = {"credentials_block": "distillery-test-wrong", "retries": 2, "retry_backoff_seconds": 0.1}
    state = distill(build_recipe(data), return_state=True)
    assert state.is_failed()
    with pytest.raises(StorageError) as err:
        state.result()
    message = str(err.value)
    assert "access denied" in message and "never-written" in message and "credentials" in message
    assert wrong not in message
    assert seaweed.filesystem().find(f"{seaweed.bucket}/never-written") == []
