"""Shard folders and sources on an object store, through the same code as local paths, against
a real S3 endpoint on 127.0.0.1 (moto's server; the endpoint and keys come from AWS_*
variables only): embedding from and to s3://, the commit record, the write lease, kill -9."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from ctfp.cli import main
from ctfp.embed.runner import embed
from ctfp.exceptions import CtfpError, InputError
from ctfp.io.fs import resolve
from ctfp.io.locks import LEASE_FILE, Lease
from ctfp.store.reader import read_embeddings, read_errors
from ctfp.store.writer import ShardWriter
from tests.conftest import (
    LUNG,
    assert_same_embeddings,
    copy_pngs,
    kill_9_while_running,
)
from tests.store.test_shards import fill, meta

# A real S3 server and processes killed mid-write: outside `make test-fast`.
pytestmark = pytest.mark.slow


def upload(client: Any, bucket: str, files: dict[str, Path | bytes]) -> None:
    for key, content in files.items():
        body = content if isinstance(content, bytes) else content.read_bytes()
        client.put_object(Bucket=bucket, Key=key, Body=body)


def keys(client: Any, bucket: str, prefix: str) -> list[str]:
    """The objects under ``prefix``, less the empty folder marker pyarrow leaves at it."""
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"][len(prefix) :] for o in listed if o["Key"] != prefix)


def committed_parts(client: Any, bucket: str, folder: str) -> Callable[[], int]:
    """``() -> int``: how many parts the commit record of ``folder`` names now (0 before it
    exists): what a kill -9 test waits on."""

    def count() -> int:
        try:
            key = f"{folder}/_manifest.json"
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return 0
        return len(json.loads(body)["parts"])

    return count


def external_s3() -> pafs.S3FileSystem:
    """The store as another reader (a data-lake job) would open it: endpoint given outright."""
    return pafs.S3FileSystem(
        endpoint_override=os.environ["AWS_ENDPOINT_URL"],
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region="us-east-1",
    )


def test_embed_from_s3_to_s3_gives_the_rows_of_a_local_run(
    tmp_path: Path, s3: str, s3_server: Any, lung_pngs: list[Path]
) -> None:
    dicom = sorted((LUNG / "dicom").rglob("*.dcm"))[:2]
    files: dict[str, Path | bytes] = {f"ct/png/{p.name}": p for p in lung_pngs[:6]}
    files.update({f"ct/dicom/{k}.dcm": p for k, p in enumerate(dicom)})
    files["ct/png/broken.png"] = b"not a png"
    upload(s3_server, s3, files)
    local = tmp_path / "ct"
    for key, content in files.items():
        path = tmp_path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.read_bytes())
    options = dict(features="pixels", dtype="float32", rows_per_shard=3, progress=False)
    ref = embed(local, tmp_path / "ref", **options)
    assert ref.rows == 8
    flags = ["--features", "pixels", "--dtype", "float32", "--rows-per-shard", "3", "--quiet"]
    assert main(["embed", f"s3://{s3}/ct", "--out", f"s3://{s3}/shards", *flags]) == 0
    stored = keys(s3_server, s3, "shards/")
    assert stored == [
        "_errors/errors.parquet",
        "_manifest.json",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]  # the lease is gone, no temporary keys are left
    a, b = read_embeddings(tmp_path / "ref"), read_embeddings(f"s3://{s3}/shards")
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert b.table.column("source").to_pylist()[0].startswith(f"s3://{s3}/ct/")
    errors = read_errors(f"s3://{s3}/shards").to_pylist()
    assert [(e["id"], e["source"]) for e in errors] == [
        ("png/broken", f"s3://{s3}/ct/png/broken.png")
    ]
    # Another reader, with the endpoint given outright: the record names the parts.
    fs = external_s3()
    with fs.open_input_stream(f"{s3}/shards/_manifest.json") as f:
        names = [p["name"] for p in json.loads(f.read())["parts"]]
    table = pq.read_table([f"{s3}/shards/{n}" for n in names], filesystem=fs)
    assert sorted(table.column("id").to_pylist()) == sorted(a.ids.tolist())
    # A rerun resumes from the record: nothing to do, the failure tried again.
    again = embed(f"s3://{s3}/ct", f"s3://{s3}/shards", **options)
    assert again.rows == 0 and again.skipped_files == 8 and len(again.errors) == 1
    # A decoded-slice cache on the store is read as a cache (its slices, not its Parquet
    # files as images): the same rows as embedding the images.
    assert main(["cache", f"s3://{s3}/ct/png", "--out", f"s3://{s3}/cache", "--quiet"]) == 0
    cached = embed(f"s3://{s3}/cache", tmp_path / "from-cache", **options)
    direct = embed(local / "png", tmp_path / "direct", **options)
    assert cached.rows == direct.rows == 6
    c, d = read_embeddings(tmp_path / "from-cache"), read_embeddings(tmp_path / "direct")
    assert sorted(c.ids) == sorted(d.ids)


def test_a_folder_on_a_store_is_read_only_through_its_record(s3: str, s3_server: Any) -> None:
    with ShardWriter(f"s3://{s3}/x", metadata=meta(), rows_per_shard=1) as w:
        fill(w, ["a", "b"])
    # A part someone put beside them is not read; a folder with no record has no shards.
    body = s3_server.get_object(Bucket=s3, Key="x/part-00000.parquet")["Body"].read()
    upload(s3_server, s3, {"x/part-00009.parquet": body, "y/part-00000.parquet": body})
    assert sorted(read_embeddings(f"s3://{s3}/x").ids) == ["a", "b"]
    with pytest.raises(InputError, match="no commit record"):
        read_embeddings(f"s3://{s3}/y")
    with pytest.raises(InputError, match="does not exist"):
        read_embeddings(f"s3://{s3}/nothing")
    s3_server.delete_object(Bucket=s3, Key="x/part-00001.parquet")
    with pytest.raises(InputError, match=r"part-00001.parquet is missing"):
        read_embeddings(f"s3://{s3}/x")


def test_one_writer_per_store_folder_by_lease(s3: str, s3_server: Any) -> None:
    folder = f"s3://{s3}/leased"
    first = ShardWriter(folder, metadata=meta())
    with pytest.raises(CtfpError, match=r"another ctfp process .* lease .*_lease.json runs until"):
        ShardWriter(folder, metadata=meta())
    # Another writer that took the lease over (two started at once): the first stops.
    lease = json.loads(s3_server.get_object(Bucket=s3, Key=f"leased/{LEASE_FILE}")["Body"].read())
    taken = {**lease, "owner": "someone-else", "pid": 1, "host": "elsewhere"}
    upload(s3_server, s3, {f"leased/{LEASE_FILE}": json.dumps(taken).encode()})
    fill(first, ["a"])
    with pytest.raises(
        CtfpError, match=r"lost the write lease .*\(elsewhere, pid 1\) took it over"
    ):
        first.flush()
    first.release()
    assert keys(s3_server, s3, "leased/") == [LEASE_FILE]  # nothing committed after the loss
    # An expired lease, or one of a process gone from this host, is taken over.
    upload(s3_server, s3, {f"leased/{LEASE_FILE}": json.dumps({**taken, "expires": 0}).encode()})
    resolve(folder).lock().release()
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = {**taken, "host": lease["host"], "pid": dead.pid, "expires": time.time() + 600}
    upload(s3_server, s3, {f"leased/{LEASE_FILE}": json.dumps(gone).encode()})
    with ShardWriter(folder, metadata=meta()) as w:
        fill(w, ["a"])
    assert keys(s3_server, s3, "leased/") == ["_manifest.json", "part-00000.parquet"]


def test_kill_9_during_an_s3_embed_and_resume_gives_the_uninterrupted_rows(
    tmp_path: Path, s3: str, s3_server: Any, lung_pngs: list[Path], embed_command
) -> None:
    src = copy_pngs(lung_pngs[:48], tmp_path / "src")
    common = dict(features="pixels:16", rows_per_shard=1, batch_size=1, workers=0)  # a commit a row
    embed(src, tmp_path / "ref", **common, progress=False)
    out = f"s3://{s3}/shards"

    committed = committed_parts(s3_server, s3, "shards")
    kills = kill_9_while_running(embed_command(src, out, **common), committed)
    assert kills >= 2, "the run finished before it could be killed; make it slower"
    subprocess.run(embed_command(src, out, **common), check=True)  # takes over the lease
    ref, got = read_embeddings(tmp_path / "ref"), read_embeddings(out)  # refuses duplicate ids
    assert len(got) == 48
    assert_same_embeddings(ref, got)
    assert LEASE_FILE not in keys(s3_server, s3, "shards/")


def test_score_from_s3_shards_into_s3_gives_the_local_scores(
    tmp_path: Path, s3: str, s3_server: Any
) -> None:
    from ctfp.runs.score import score_shards
    from tests.runs.test_score import fit_centroid, write_shards

    write_shards(tmp_path / "emb", n=600, per_shard=200)
    write_shards(f"s3://{s3}/emb", n=600, per_shard=200)
    rng = np.random.default_rng(1)
    model = fit_centroid(4, rng.gamma(1.0, 1.0, (200, 64)), rng.gamma(1.2, 1.0, (200, 64)))
    local = score_shards(model, tmp_path / "emb", tmp_path / "scores", progress=False)
    remote = score_shards(model, f"s3://{s3}/emb", f"s3://{s3}/scores", progress=False)
    assert local["rows"] == remote["rows"] == 600 and remote["shards_written"] == 3
    assert keys(s3_server, s3, "scores/") == [
        "_manifest.json",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    fs = external_s3()
    with fs.open_input_stream(f"{s3}/scores/_manifest.json") as f:
        names = [p["name"] for p in json.loads(f.read())["parts"]]
    got = pq.read_table([f"{s3}/scores/{n}" for n in names], filesystem=fs).sort_by("id")
    want = pq.read_table(sorted((tmp_path / "scores").glob("part-*.parquet"))).sort_by("id")
    assert got.select(["id", "score", "label"]).equals(want.select(["id", "score", "label"]))
    # Resume: an output lost from the store is scored again, the rest skipped.
    s3_server.delete_object(Bucket=s3, Key="scores/part-00001.parquet")
    again = score_shards(model, f"s3://{s3}/emb", f"s3://{s3}/scores", progress=False)
    assert (again["shards_written"], again["shards_skipped"]) == (1, 2)
    with pytest.raises(InputError, match="holds the embedding shards being scored"):
        score_shards(model, f"s3://{s3}/emb", f"s3://{s3}/emb/", progress=False)


def test_a_store_that_stops_answering_stops_the_writer_with_its_lease_named(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:  # a store of this test's own, to stop
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="gone")
        lease = Lease(resolve("s3://gone/shards"), seconds=1.5)
        lease.check()  # held, fresh
    finally:
        server.stop()
    time.sleep(1.0)  # the renewal thread now fails; half the lease has passed
    with pytest.raises(CtfpError, match=r"(cannot read|could not renew) the write lease"):
        lease.check()
    lease.release()  # the store is gone: a warning, not an error hiding the first one


def test_kill_9_during_an_s3_score_and_rerun_gives_every_score_once(
    tmp_path: Path, s3: str, s3_server: Any
) -> None:
    import sys

    from ctfp.runs.models import save_model
    from ctfp.runs.score import score_shards
    from tests.runs.test_score import IDENTITY, fit_centroid, write_shards

    write_shards(tmp_path / "emb", n=3000, per_shard=40)  # 75 shards
    rng = np.random.default_rng(1)
    model = fit_centroid(4, rng.gamma(1.0, 1.0, (200, 64)), rng.gamma(1.2, 1.0, (200, 64)))
    save_model(model, tmp_path / "model", identity={**IDENTITY, "decode": {}})
    score_shards(model, tmp_path / "emb", tmp_path / "ref", progress=False)
    out = f"s3://{s3}/scores"
    command = [sys.executable, "-m", "ctfp", "score", str(tmp_path / "model")]
    command += [str(tmp_path / "emb"), "--out", out, "--quiet"]

    committed = committed_parts(s3_server, s3, "scores")
    kills = kill_9_while_running(command, committed, (5, 35))
    assert kills >= 2, "the run finished before it could be killed; make it slower"
    assert main(command[3:]) == 0  # takes over the lease, scores what is left
    fs = external_s3()
    with fs.open_input_stream(f"{s3}/scores/_manifest.json") as f:
        names = [p["name"] for p in json.loads(f.read())["parts"]]
    assert len(names) == 75
    got = pq.read_table([f"{s3}/scores/{n}" for n in names], filesystem=fs).sort_by("id")
    want = pq.read_table(sorted((tmp_path / "ref").glob("part-*.parquet"))).sort_by("id")
    assert got.num_rows == 3000  # every row once
    assert got.select(["id", "score", "label"]).equals(want.select(["id", "score", "label"]))
    assert LEASE_FILE not in keys(s3_server, s3, "scores/")


def test_manifests_on_a_store_and_uris_in_manifests(
    tmp_path: Path, s3: str, s3_server: Any, lung_pngs: list[Path]
) -> None:
    pngs = lung_pngs[:4]
    upload(s3_server, s3, {f"ct/{p.name}": p for p in pngs})
    names = [p.name for p in pngs]
    # On the store: keys relative to the manifest's prefix, and a URI elsewhere in the bucket.
    rows = "path,label\n" + "".join(f"{n},lung\n" for n in names[:3])
    upload(s3_server, s3, {"lists/other.png": pngs[3]})
    rows += f"s3://{s3}/lists/other.png,\n"
    upload(s3_server, s3, {"ct/list.csv": rows.encode()})
    options = dict(features="pixels", dtype="float32", progress=False)
    got = embed([f"s3://{s3}/ct/list.csv"], tmp_path / "a", **options)
    assert got.rows == 4 and not got.errors
    data = read_embeddings(tmp_path / "a")
    assert sorted(data.ids) == sorted([n[:-4] for n in names[:3]] + [f"s3://{s3}/lists/other"])
    assert data.table.column("label").to_pylist().count("lung") == 3
    # A local manifest naming objects: the same rows.
    local_list = tmp_path / "list.csv"
    local_list.write_text("path,id\n" + "".join(f"s3://{s3}/ct/{n},{n[:-4]}\n" for n in names))
    assert embed([local_list], tmp_path / "b", **options).rows == 4
    ref = embed(copy_pngs(pngs, tmp_path / "src"), tmp_path / "ref", **options)
    assert ref.rows == 4
    assert_same_embeddings(read_embeddings(tmp_path / "ref"), read_embeddings(tmp_path / "b"))
    upload(s3_server, s3, {"ct/bad.csv": b"file\nx.png\n"})
    with pytest.raises(InputError, match=r"manifest 's3://.*/ct/bad.csv' has no 'path' column"):
        embed([f"s3://{s3}/ct/bad.csv"], tmp_path / "c", **options)
