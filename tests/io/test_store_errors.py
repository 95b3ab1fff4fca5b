"""An object store's errors are one line naming the URI (exit 2), and a store that does not
answer fails within seconds: against the real S3 endpoint on 127.0.0.1 (moto's server), a
closed port and a socket that accepts and never answers; a GCS client without network."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctfp.cli import main
from ctfp.exceptions import InputError, StorageError
from ctfp.io import fs, locks
from ctfp.io.fs import resolve
from tests.conftest import copy_pngs

PIXELS = ["--features", "pixels", "--dtype", "float32", "--quiet"]


@pytest.fixture
def src(tmp_path: Path, lung_pngs: list[Path]) -> Path:
    return copy_pngs(lung_pngs[:2], tmp_path / "src")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stalled() -> Iterator[str]:
    """The endpoint of a socket that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.startswith("ctfp: error: ") and err.count("\n") == 1, err
    return err


def test_a_missing_bucket_is_one_line(
    src: Path, s3_server: Any, capsys: pytest.CaptureFixture
) -> None:
    assert main(["embed", str(src), "--out", "s3://ctfp-no-such-bucket/x", *PIXELS]) == 2
    err = one_error_line(capsys)
    assert "s3://ctfp-no-such-bucket/x" in err and "create the bucket or correct the URI" in err


def test_a_closed_port_fails_fast_with_one_line_naming_the_uri_and_endpoint(
    src: Path, s3: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    start = time.monotonic()
    assert main(["embed", str(src), "--out", f"s3://{s3}/x", *PIXELS]) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"ctfp: error: s3://{s3}/x") and f"the store at {endpoint}" in err
    # A source on it: one line naming the source and the store.
    assert main(["embed", f"s3://{s3}/ct", "--out", str(src.parent / "out"), *PIXELS]) == 2
    err = one_error_line(capsys)
    assert "did not answer" in err and f"s3://{s3}/ct" in err and endpoint in err
    assert time.monotonic() - start < 10


def test_a_stalled_endpoint_fails_within_the_request_time_limit(
    s3: str, stalled: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", stalled)
    monkeypatch.setitem(fs.STORE_TIMEOUTS, "request", 1.0)  # 3 s and 3 attempts by default:
    monkeypatch.setitem(fs.STORE_TIMEOUTS, "attempts", 1)  # a faster test
    start = time.monotonic()
    with pytest.raises(StorageError, match=rf"^s3://{s3}/k: .*the store at {stalled} did not"):
        resolve(f"s3://{s3}/k").exists()
    assert time.monotonic() - start < 5


def test_reading_the_lease_has_a_time_limit(
    s3: str, stalled: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a store's client does (fsspec's may wait for ever), a writer does not."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", stalled)
    monkeypatch.setitem(fs.STORE_TIMEOUTS, "request", 60.0)
    monkeypatch.setattr(locks, "LEASE_READ_SECONDS", 0.5)
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"_lease.json: the store did not answer within 0 s"):
        resolve(f"s3://{s3}/slow").lock()
    assert time.monotonic() - start < 3


def test_gcs_retries_have_a_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GCS client's retries, which waited minutes without network, stop at the limit."""
    monkeypatch.setitem(fs.STORE_TIMEOUTS, "retry", 1.0)
    start = time.monotonic()
    try:
        there = resolve(f"gs://ctfp-test-{time.time_ns()}/x").exists()
    except StorageError as exc:
        assert str(exc).startswith("gs://ctfp-test-") and "\n" not in str(exc)
    else:
        assert not there  # a machine with network and credentials
    assert time.monotonic() - start < 10


def test_uris_that_are_refused_in_one_line(capsys: pytest.CaptureFixture, src: Path) -> None:
    for uri in ("s3://bucket/../up", "s3://bucket/a/./b", "gs://bucket/x/.."):
        with pytest.raises(InputError, match=r"'\.' and '\.\.' name no folder"):
            resolve(uri)
    assert main(["embed", str(src), "--out", "s3://bucket/../up", *PIXELS]) == 2
    assert "s3://bucket/../up" in one_error_line(capsys)
    # Azure without an account name, and with one but no credentials.
    for uri, says in (
        ("abfs://container/x", "cannot open"),
        ("abfs://container@ctfptest.dfs.core.windows.net/x", "credentials"),
    ):
        assert main(["embed", str(src), "--out", uri, *PIXELS]) == 2
        err = one_error_line(capsys)
        assert uri in err and says in err


def test_a_store_stopped_mid_write_is_one_line_naming_it(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    from ctfp.exceptions import CtfpError
    from ctfp.store.writer import ShardWriter
    from tests.store.test_shards import fill, meta

    monkeypatch.setitem(fs.STORE_TIMEOUTS, "attempts", 1)  # no retries: a faster test
    port = closed_port()  # a store of this test's own, to stop
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="stopped")
        writer = ShardWriter("s3://stopped/x", metadata=meta(), rows_per_shard=1)
        fill(writer, ["a"])
    finally:
        server.stop()
    with pytest.raises(CtfpError) as caught:
        fill(writer, ["b"])
        writer.flush()
    writer.release()  # the lease cannot be deleted: a warning
    said = str(caught.value)
    assert "s3://stopped/x/" in said and f"the store at {endpoint} did not answer" in said
    assert "\n" not in said
