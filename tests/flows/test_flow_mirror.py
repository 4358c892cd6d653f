"""A rebuild from an HTTP mirror: transient failures are retried, credentials are never recorded."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

from colorfeat import sources
from colorfeat.redact import SECRETS_ENV
from colorfeat.sources import archives
from flows import pipeline
from flows.local import checked_config
from tests.colorfeat import conftest as ingest
from tests.colorfeat.conftest import colour_picture, jpeg_bytes, zip_bytes
from tests.flows.conftest import PREFECT_HOME, TINY

ANNOTATIONS = "/annotations/annotations_trainval2014.zip"
file_server = ingest.file_server  # the fault-injecting loopback HTTP server of the ingest tests


def serve_mirror(server) -> None:
    """A 2014 mirror of 3 train and 2 val pictures, each with a caption naming a colour."""
    for split, n in (("train2014", 3), ("val2014", 2)):
        pictures = {f"{split}/{i:03d}.jpg": jpeg_bytes(colour_picture(i)) for i in range(n)}
        server.files[f"/zips/{split}.zip"] = zip_bytes(pictures)
    captions = {}
    for split, n in (("train2014", 3), ("val2014", 2)):
        doc = {
            "images": [{"id": i + 1, "file_name": f"{i:03d}.jpg"} for i in range(n)],
            "annotations": [
                {"id": i + 1, "image_id": i + 1, "caption": f"a red bus number {i}"}
                for i in range(n)
            ],
        }
        captions[f"annotations/captions_{split}.json"] = json.dumps(doc).encode()
    server.files[ANNOTATIONS] = zip_bytes(captions)


def parameters(source: str, tmp_path: Path) -> dict:
    """The flow parameters `colorfeat run` makes of a tiny rebuild of `source`."""
    options = {
        "source": source,
        "store": str(tmp_path / "store"),
        "work_dir": str(tmp_path / "work"),
    }
    return checked_config({**TINY, "device": "cpu", **options}).to_options()


def files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def flow_run_record(flow_run_id: str) -> str:
    """The flow run's parameters, its logs and its artifacts as the Prefect API holds them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs travel to the API in batches

    async def read() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        parts = [json.dumps(run.parameters), *(log.message for log in logs)]
        parts += [str(a.data) for a in artifacts]
        parts += [f"{t.name} {t.state.message if t.state else ''}" for t in tasks]
        return "\n".join(parts)

    return asyncio.run(read())


def test_mirror_with_a_token_retried_through_503s_records_no_token(
    prefect_api, file_server, tmp_path, monkeypatch, capfd, caplog, request
):
    """One rebuild (the costly part) checks both: the acquire task's retries and redaction."""
    token = "tok3n-" + secrets.token_hex(8)
    serve_mirror(file_server)
    file_server.login = f"reader:{token}"
    file_server.unavailable[ANNOTATIONS] = 2  # the year probe answers 503 to two runs of acquire
    monkeypatch.setenv(SECRETS_ENV, "{}")  # what `conceal` adds is undone after the test
    monkeypatch.setattr(pipeline, "BACKOFF_S", 0)  # retry at once
    pipeline.stage_task_of.cache_clear()
    request.addfinalizer(pipeline.stage_task_of.cache_clear)
    monkeypatch.setattr(archives, "official_checksums", dict)  # tiny archives, official names
    host = file_server.url.removeprefix("http://")

    params = parameters(f"http://reader:{token}@{host}/", tmp_path)
    assert params["source"] == f"http://***@{host}/"
    summary = pipeline.rebuild(params)

    assert summary["published"] and summary["source"]["spec"] == f"http://***@{host}/"
    probes = [r for r in file_server.requests if r[:2] == ("HEAD", ANNOTATIONS)]
    assert len(probes) == 3  # two transient failures, each retried by the flow
    record = flow_run_record(summary["flow_run_id"])
    assert "Retry 1/3" in record and f"cannot reach http://***@{host}/annotations" in record
    out, err = capfd.readouterr()
    assert f"downloading http://***@{host}/zips/train2014.zip" in err
    assert "Retry 2/3" in caplog.text  # the log lines the console shows
    for text in (out, err, caplog.text, record):
        assert token not in text
    for root in (tmp_path, PREFECT_HOME):
        assert files_containing(root, token.encode()) == []

    # The same mirror with other credentials: the same downloads, the same store version.
    other = "tok3n-" + secrets.token_hex(8)
    file_server.login = f"other:{other}"
    again = pipeline.rebuild(parameters(f"http://other:{other}@{host}/", tmp_path))
    assert again["version"] == summary["version"] and not again["published"]
    fresh = sources.acquire(f"http://other:{other}@{host}", tmp_path / "fresh", progress=False)
    assert fresh["identity"] == again["source"]["identity"]
    assert files_containing(tmp_path, other.encode()) == []
