"""Remote sources and targets: ``s3://bucket/key`` and ``http(s)://…`` paths.

Every place that takes a path (CsvExtractor, MergeDriver inputs and output,
CsvWriter) also takes an S3 or HTTP URL. Downloads land in the session's temp
folder before DuckDB reads them; uploads are multipart and leave nothing
behind on failure. Credentials come from the ``AWS_*`` environment variables
or the step's ``storage_options`` (which win), and never appear in messages,
logs, events or ``artifacts/<step>/cleaned_config.json``.

The S3 server is moto's standalone server on a free 127.0.0.1 port (started
per module, stopped afterwards); HTTP files are served by an
``http.server.ThreadingHTTPServer`` thread. moto does not check credentials
unless told to: the wrong-credentials tests use a second moto server on which
IAM enforcement is switched on (``POST /moto-api/reset-auth``) after an IAM
user has been created.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckmerge
import pyarrow.parquet as pq
import pytest
from _drivers_util import CONTACTS_SQL, table_rows, write_bytes

boto3 = pytest.importorskip("boto3", reason="boto3 comes with moto[server]")
pytest.importorskip("moto.server", reason='needs moto\'s server: pip install "moto[server]"')

SECRET = "testing-secret-value"
REGION = "us-east-1"

CRM_CSV = "id,email,city\n1,ann@x.cz,Brno\n2,bob@x.cz,\n3,cyd@x.cz,Ostrava\n"
CRM_ROWS = [(1, "ann@x.cz", "Brno"), (2, "bob@x.cz", None), (3, "cyd@x.cz", "Ostrava")]
VENDOR_CSV = "email,city,phone\nann@x.cz,Praha,+420601111222\nbob@x.cz,Plzen,\nzed@x.cz,Kolin,\n"


@pytest.fixture(autouse=True)
def _cwd_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build without remote support takes ``s3://b/k`` for the relative path
    ``s3:/b/k``: keep whatever it writes out of the checkout."""
    monkeypatch.chdir(tmp_path)


# --- servers ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoServer:
    """A running moto server: its endpoint URL and process."""

    endpoint: str
    process: subprocess.Popen[bytes]


def _start_moto(log_path: Path) -> MotoServer:
    """Starts ``python -m moto.server`` on a free loopback port and waits until it listens."""
    port = _free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited early:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                _stop(process)
                raise RuntimeError(f"moto server did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
    return MotoServer(endpoint=f"http://127.0.0.1:{port}", process=process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint (``http://127.0.0.1:<port>``) of a moto S3 server for this module."""
    server = _start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server.endpoint
    finally:
        _stop(server.process)


def s3_client(endpoint: str, key_id: str = "testing", secret: str = SECRET) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The standard AWS variables pointing at moto; the developer's own AWS
    settings (profile, shared files, session token) are hidden."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def s3(aws_env: str) -> Iterator[Any]:
    """A boto3 S3 client for the moto server."""
    client = s3_client(aws_env)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def bucket(s3: Any) -> str:
    """A new, empty bucket."""
    name = f"dm-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@dataclass
class HttpFiles:
    """Files in ``root`` served at ``base`` (``http://127.0.0.1:<port>``)."""

    base: str
    root: Path


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpFiles]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpFiles(base=f"http://127.0.0.1:{server.server_address[1]}", root=root)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- helpers -----------------------------------------------------------------------------


def extract(session: duckmerge.Session, step_id: str, path: str, **config: Any) -> dict[str, Any]:
    return duckmerge.CsvExtractor().run(
        step_id=step_id, config={"path": path, **config}, inputs=None, ctx=session
    )


def write(
    session: duckmerge.Session, path: str, table: str = "contacts", **config: Any
) -> dict[str, Any]:
    return duckmerge.CsvWriter().run(
        step_id="w", config={"path": path, **config}, inputs={"table": table}, ctx=session
    )


def object_bytes(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def text_files(folder: Path) -> dict[Path, str]:
    """Every log, event and artifact file of a session folder, as text."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and (
            path.suffix in {".json", ".jsonl", ".log", ".txt"}
            or "logs" in path.parts
            or "artifacts" in path.parts
        ):
            found[path] = path.read_bytes().decode("utf-8", "replace")
    return found


def assert_secret_nowhere(secret: str, session_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    for path, text in text_files(session_dir).items():
        assert secret not in text, f"secret in {path}"
    for record in caplog.records:
        assert secret not in record.getMessage(), record.getMessage()


# --- extract ----------------------------------------------------------------------------------


def test_extractor_loads_a_csv_from_s3(s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="in/crm.csv", Body=CRM_CSV.encode())
    with duckmerge.Session(tmp_path / "s") as session:
        result = extract(session, "crm", f"s3://{bucket}/in/crm.csv")
        assert result == {"table": "crm", "rows": 3}
        assert table_rows(session, "crm", order_by="id") == CRM_ROWS


@pytest.mark.parametrize("name", ["crm.csv", "crm.csv.gz"])
def test_extractor_loads_a_csv_over_http(http_server, tmp_path, name):
    data = CRM_CSV.encode()
    write_bytes(http_server.root / name, gzip.compress(data) if name.endswith(".gz") else data)
    with duckmerge.Session(tmp_path / "s") as session:
        result = extract(session, "crm", f"{http_server.base}/{name}")
        assert result == {"table": "crm", "rows": 3}
        assert table_rows(session, "crm", order_by="id") == CRM_ROWS


def test_extractor_loads_a_gzipped_csv_from_s3(s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="crm.csv.gz", Body=gzip.compress(CRM_CSV.encode()))
    with duckmerge.Session(tmp_path / "s") as session:
        assert extract(session, "crm", f"s3://{bucket}/crm.csv.gz")["rows"] == 3
        assert table_rows(session, "crm", order_by="id") == CRM_ROWS


def test_missing_key_is_source_not_found_naming_the_url(s3, bucket, tmp_path):
    url = f"s3://{bucket}/no/such.csv"
    with duckmerge.Session(tmp_path / "s") as session:
        with pytest.raises(duckmerge.SourceNotFoundError) as info:
            extract(session, "crm", url)
    assert url in str(info.value)


def test_missing_bucket_is_source_not_found(aws_env, tmp_path):
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/crm.csv"
    with duckmerge.Session(tmp_path / "s") as session:
        with pytest.raises(duckmerge.SourceNotFoundError) as info:
            extract(session, "crm", url)
    assert url in str(info.value)


def test_missing_http_file_is_source_not_found(http_server, tmp_path):
    url = f"{http_server.base}/missing.csv"
    with duckmerge.Session(tmp_path / "s") as session:
        with pytest.raises(duckmerge.SourceNotFoundError) as info:
            extract(session, "crm", url)
    assert url in str(info.value)


def test_downloads_do_not_stay_in_the_session_folder(s3, bucket, tmp_path):
    """The downloaded copy (``<uuid>-crm.csv`` in the session's temp folder)
    is removed once DuckDB has loaded it: CRM data does not pile up."""
    s3.put_object(Bucket=bucket, Key="crm.csv", Body=CRM_CSV.encode())
    with duckmerge.Session(tmp_path / "s") as session:
        extract(session, "crm", f"s3://{bucket}/crm.csv")
    leftovers = [p.name for p in (tmp_path / "s").rglob("*crm.csv")]
    assert leftovers == [], leftovers


# --- write ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.csv", "out.parquet"])
def test_writer_uploads_the_same_bytes_as_a_local_write(s3, bucket, tmp_path, name):
    local = tmp_path / name
    with duckmerge.Session(tmp_path / "s") as session:
        session.execute(CONTACTS_SQL)
        assert write(session, str(local)) == {}
        assert write(session, f"s3://{bucket}/exports/{name}") == {}
    uploaded = object_bytes(s3, bucket, f"exports/{name}")
    assert uploaded == local.read_bytes()
    if name.endswith(".parquet"):
        assert uploaded[:4] == b"PAR1"
        assert pq.read_table(local).column("id").to_pylist() == [1, 2, 3, 4]
    else:
        assert uploaded.startswith(b"city,id,note\n")
    assert keys(s3, bucket) == [f"exports/{name}"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_writer_to_a_missing_bucket_fails_and_creates_nothing(s3, tmp_path):
    missing = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    before = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with duckmerge.Session(tmp_path / "s") as session:
        session.execute(CONTACTS_SQL)
        with pytest.raises(duckmerge.DuckMergeError) as info:
            write(session, f"s3://{missing}/out.csv")
    assert f"s3://{missing}/out.csv" in str(info.value)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == before


def test_writer_to_http_is_refused_as_read_only(http_server, tmp_path):
    with duckmerge.Session(tmp_path / "s") as session:
        session.execute(CONTACTS_SQL)
        with pytest.raises(duckmerge.DuckMergeError, match="read-only"):
            write(session, f"{http_server.base}/out.csv")
    assert list(http_server.root.iterdir()) == []


# --- merge ---------------------------------------------------------------------------------------


def merge_config(original: str, enriched: str, output: str) -> dict[str, Any]:
    return {
        "original": {"path": original},
        "enriched": [{"path": enriched, "name": "vendor"}],
        "keys": ["email"],
        "output": {"path": output},
    }


def test_merge_reads_and_writes_s3(s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="crm.csv", Body=CRM_CSV.encode())
    s3.put_object(Bucket=bucket, Key="vendor.csv", Body=VENDOR_CSV.encode())
    remote = merge_config(
        f"s3://{bucket}/crm.csv", f"s3://{bucket}/vendor.csv", f"s3://{bucket}/merged.csv"
    )
    with duckmerge.Session(tmp_path / "remote") as session:
        result = duckmerge.MergeDriver().run(
            step_id="merged", config=remote, inputs=None, ctx=session
        )
        remote_rows = table_rows(session, "merged", order_by="id")
    # The same merge on local copies is the reference.
    crm = write_bytes(tmp_path / "crm.csv", CRM_CSV)
    vendor = write_bytes(tmp_path / "vendor.csv", VENDOR_CSV)
    local_out = tmp_path / "merged.csv"
    local = merge_config(str(crm), str(vendor), str(local_out))
    with duckmerge.Session(tmp_path / "local") as session:
        duckmerge.MergeDriver().run(step_id="merged", config=local, inputs=None, ctx=session)
        local_rows = table_rows(session, "merged", order_by="id")

    assert result["rows"] == 3
    assert result["stats"]["matched"] == 2
    assert remote_rows == local_rows
    assert [r[0] for r in remote_rows] == [1, 2, 3]
    assert object_bytes(s3, bucket, "merged.csv") == local_out.read_bytes()


def test_merge_with_a_missing_enriched_key_names_the_url(s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="crm.csv", Body=CRM_CSV.encode())
    missing = f"s3://{bucket}/vendor-missing.csv"
    config = merge_config(f"s3://{bucket}/crm.csv", missing, f"s3://{bucket}/merged.csv")
    with duckmerge.Session(tmp_path / "s") as session:
        with pytest.raises(duckmerge.SourceNotFoundError) as info:
            duckmerge.MergeDriver().run(step_id="merged", config=config, inputs=None, ctx=session)
    assert missing in str(info.value)
    assert keys(s3, bucket) == ["crm.csv"]


# --- storage_options ---------------------------------------------------------------------------


@pytest.mark.parametrize("env_endpoint", ["unset", "unreachable"])
def test_storage_options_override_env_and_are_masked_in_cleaned_config(
    moto_server, aws_env, s3, bucket, monkeypatch, tmp_path, env_endpoint
):
    s3.put_object(Bucket=bucket, Key="crm.csv", Body=CRM_CSV.encode())
    if env_endpoint == "unset":
        monkeypatch.delenv("AWS_ENDPOINT_URL")
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    options_secret = "options-only-secret-value"
    storage_options = {
        "endpoint_url": moto_server,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": options_secret,
        "region": REGION,
    }
    with duckmerge.Session(tmp_path / "s") as session:
        result = extract(session, "crm", f"s3://{bucket}/crm.csv", storage_options=storage_options)
        assert result == {"table": "crm", "rows": 3}
        assert table_rows(session, "crm", order_by="id") == CRM_ROWS
        cleaned_path = Path(session.artifacts_dir) / "crm" / "cleaned_config.json"
    text = cleaned_path.read_text()
    assert options_secret not in text
    cleaned = json.loads(text)
    assert cleaned["path"] == f"s3://{bucket}/crm.csv"
    assert cleaned["storage_options"]["aws_secret_access_key"] == "***"
    assert cleaned["storage_options"]["endpoint_url"] == moto_server
    assert cleaned["storage_options"]["region"] == REGION


def test_unknown_storage_option_is_a_config_error_listing_valid_keys(s3, bucket, tmp_path):
    with duckmerge.Session(tmp_path / "s") as session:
        with pytest.raises(duckmerge.ConfigError) as info:
            extract(
                session,
                "crm",
                f"s3://{bucket}/crm.csv",
                storage_options={"aws_secret_acess_key": "typo-secret-value"},
            )
    message = str(info.value)
    assert "aws_secret_acess_key" in message
    assert "aws_secret_access_key" in message
    assert "typo-secret-value" not in message


# --- wrong credentials (moto with IAM enforcement) ------------------------------------------------


@dataclass
class AuthServer:
    """A moto server that checks credentials; ``key_id``/``secret`` are valid."""

    endpoint: str
    key_id: str
    secret: str
    bucket: str


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    server = _start_moto(tmp_path_factory.mktemp("moto-auth") / "moto.log")
    try:
        # Set up while moto still accepts anything, then enforce IAM auth.
        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint,
            region_name=REGION,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="loader")
        key = iam.create_access_key(UserName="loader")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(
            UserName="loader", PolicyName="s3-all", PolicyDocument=json.dumps(policy)
        )
        iam.close()
        client = s3_client(server.endpoint, key["AccessKeyId"], key["SecretAccessKey"])
        client.create_bucket(Bucket="locked")
        client.put_object(Bucket="locked", Key="crm.csv", Body=CRM_CSV.encode())
        client.close()
        # A body without a form content type: moto reads it as the count.
        request = urllib.request.Request(
            f"{server.endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            pytest.skip(f"this moto cannot enforce credentials (/moto-api/reset-auth: {exc})")
        yield AuthServer(
            server.endpoint, key["AccessKeyId"], key["SecretAccessKey"], bucket="locked"
        )
    finally:
        _stop(server.process)


@pytest.fixture
def auth_env(
    auth_server: AuthServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AuthServer:
    """Env pointing at the enforcing server with the valid key id and a WRONG secret."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", auth_server.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", auth_server.endpoint)
    return auth_server


def test_the_enforcing_server_accepts_the_right_credentials(auth_env, monkeypatch, tmp_path):
    """Control for the tests below: with the valid secret the same read works."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", auth_env.secret)
    with duckmerge.Session(tmp_path / "s") as session:
        assert extract(session, "crm", f"s3://{auth_env.bucket}/crm.csv")["rows"] == 3


def test_wrong_secret_is_access_denied_without_the_secret(auth_env, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    with duckmerge.Session(tmp_path / "s") as session:
        with pytest.raises(duckmerge.DuckMergeError) as info:
            extract(session, "crm", f"s3://{auth_env.bucket}/crm.csv")
    message = str(info.value)
    assert "access denied" in message.lower()
    assert f"s3://{auth_env.bucket}/crm.csv" in message
    assert SECRET not in message
    assert_secret_nowhere(SECRET, tmp_path / "s", caplog)


def test_unknown_key_id_in_storage_options_is_access_denied(auth_env, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    options = {"aws_access_key_id": "AKIAUNKNOWN0000000", "aws_secret_access_key": SECRET}
    with duckmerge.Session(tmp_path / "s") as session:
        with pytest.raises(duckmerge.DuckMergeError) as info:
            extract(session, "crm", f"s3://{auth_env.bucket}/crm.csv", storage_options=options)
    assert "access denied" in str(info.value).lower()
    assert SECRET not in str(info.value)
    assert_secret_nowhere(SECRET, tmp_path / "s", caplog)


def test_upload_with_a_wrong_secret_leaves_no_object(auth_env, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    with duckmerge.Session(tmp_path / "s") as session:
        session.execute(CONTACTS_SQL)
        with pytest.raises(duckmerge.DuckMergeError) as info:
            write(session, f"s3://{auth_env.bucket}/out.csv")
    assert "access denied" in str(info.value).lower()
    assert SECRET not in str(info.value)
    assert_secret_nowhere(SECRET, tmp_path / "s", caplog)
    admin = s3_client(auth_env.endpoint, auth_env.key_id, auth_env.secret)
    try:
        assert keys(admin, auth_env.bucket) == ["crm.csv"]
        assert admin.list_multipart_uploads(Bucket=auth_env.bucket).get("Uploads", []) == []
    finally:
        admin.close()
