"""Secrets: a canary token in a Databricks environment's credentials appears nowhere it should not.

The canary is registered for real (a DatabricksCredentials block on the test server, referenced by
a `staging` DbtEnvironment block). Then: its profile is rendered and parsed by real dbt-databricks,
a local production run happens with the secret in the process environment, and a production run
against the Databricks environment fails on purpose: its host is a local TLS endpoint standing in for
Databricks HTTP, which answers every request 403, as a workspace does for a revoked token
(databricks-sql-connector does not retry a 403; an unreachable host it retries for up to 15 min).

Then every place the canary could leak to is read: Prefect logs and artifacts through the API,
every block document field (only the credentials' `token` may hold it), captured stdout/stderr,
every file under $LAKEHOUSE_HOME, the private temp dir, the Prefect server's home (its database
and log), dbt `target/` dirs, and temp files written during the test.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import random
import ssl
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dbt.cli.main import dbtRunner

from blocks.environment import BlueGreenSettings, DbtEnvironment, load_environment
from blocks.profile import PROFILE_DIR_PREFIX, rendered_profile
from flows.production import production_run

from conftest import artifacts_of, flow_run_logs, paths_holding, read_all, record_timing, saved_block
from .helpers import BUNDLED_PROJECT, copy_home

CANARY = f"dapi-RELIABILITY-CANARY-{uuid.uuid4().hex}"
ENVIRONMENT = "staging"
CREDENTIALS = "reliability-canary-credentials"


class _Forbidden(BaseHTTPRequestHandler):
    seen_tokens: list[str] = []

    def _refuse(self):
        self.seen_tokens.append(self.headers.get("Authorization", ""))
        body = b'{"error_code": "PERMISSION_DENIED", "message": "Invalid access token."}'
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _refuse

    def log_message(self, *args):  # nothing about requests goes anywhere
        pass


def _self_signed(directory: Path, address: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert, key_file = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key_file


@pytest.fixture(scope="session")
def fake_workspace(tmp_path_factory):
    """A TLS endpoint on a random loopback address and a free port: no privileged port, so it runs
    as the unprivileged CI user too. The host is `<address>:<port>` (see `connector_honours_the_port`).
    Session-scoped: the connector's telemetry thread may still post
    to it after this module."""
    directory = tmp_path_factory.mktemp("fake-workspace")
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    server = ThreadingHTTPServer((address, 0), _Forbidden)
    cert, key = _self_signed(directory, address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"host": f"{address}:{server.server_address[1]}", "ca": cert}
    server.shutdown()
    server.server_close()


def connector_honours_the_port(patch: pytest.MonkeyPatch) -> None:
    """databricks-sql-connector connections go to the port in the host (`127.x.y.z:<port>`), not 443.

    The workspace host carries an explicit port, which the Databricks SDK honours (dbt-databricks'
    host-metadata probe and auth go there) and the connector's feature-flag and telemetry clients
    keep, but the connector's Thrift client appends `:443` (`thrift_backend.py`: `uri = "{host}:{port}/{path}"`,
    port from `_port`, default 443) unless given the whole `_connection_uri`. dbt-databricks opens
    connections through `databricks.sql.connect(**conn_args)` (`dbt/adapters/databricks/handle.py`),
    so that argument is added there; the profile, credentials and token are as in production."""
    import databricks.sql

    connect = databricks.sql.connect

    def connect_to_host_port(*args, **kwargs):
        uri = f"https://{kwargs['server_hostname']}/{kwargs['http_path'].lstrip('/')}"
        return connect(*args, **{**kwargs, "_connection_uri": uri})

    patch.setattr(databricks.sql, "connect", connect_to_host_port)


@pytest.fixture(scope="module")
def canary_environment(prefect_server, fake_workspace):
    """The canary registered for real: a credentials block and a Databricks environment referencing it.
    Afterwards the server's blocks are as the other test modules expect them."""
    from prefect_databricks import DatabricksCredentials

    with saved_block(DatabricksCredentials(databricks_instance=fake_workspace["host"], token=CANARY), CREDENTIALS):
        environment = DbtEnvironment(
            adapter="databricks", schema_name="analytics", catalog="reliability", threads=2,
            http_path="/sql/1.0/warehouses/reliability0canary",
            databricks_credentials=DatabricksCredentials.load(CREDENTIALS),
            blue_green=BlueGreenSettings(enabled=True), step_timeout_seconds=600,
            connect_retry_seconds=60,  # a request sent elsewhere than the stand-in fails the run in a minute, not 15
        )
        with saved_block(environment, ENVIRONMENT):
            yield load_environment(ENVIRONMENT)


@pytest.fixture(scope="module")
def exercised(canary_environment, fake_workspace, published_template, tmp_path_factory, prefect_server):
    """Everything that handles the secret, run once; the tests below search what it left."""
    root = tmp_path_factory.mktemp("secrets")
    home = copy_home(published_template, root / "home")
    private_tmp = root / "tmp"
    private_tmp.mkdir()
    started = time.time()
    events: dict = {"flow_runs": [], "home": home, "private_tmp": private_tmp, "started": started, "targets": []}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAKEHOUSE_HOME", str(home))
        patch.setenv("TMPDIR", str(private_tmp))
        patch.setattr(tempfile, "tempdir", str(private_tmp))
        patch.setenv("SSL_CERT_FILE", str(fake_workspace["ca"]))  # trust the stand-in workspace (connector)
        patch.setenv("REQUESTS_CA_BUNDLE", str(fake_workspace["ca"]))  # (dbt-databricks' host probe, requests)
        patch.setenv("DATABRICKS_STAGING_TOKEN", CANARY)  # as an operator's shell would hold it
        connector_honours_the_port(patch)

        # 1. render the profile and parse it with the real adapter
        with rendered_profile(canary_environment, BUNDLED_PROJECT) as profile:
            events["profile_text"] = (profile.profiles_dir / "profiles.yml").read_text()
            events["profile_dir"] = profile.profiles_dir
            target = root / "parse-target"
            result = dbtRunner().invoke([
                "parse", "--project-dir", str(BUNDLED_PROJECT), "--profiles-dir", str(profile.profiles_dir),
                "--target", profile.target, "--target-path", str(target), "--log-path", str(target / "logs"),
                "--log-level", "debug",
            ])
            events["parse"] = result.success, result.exception
            events["targets"].append(target)
        events["environ_after_profile"] = {k: v for k, v in os.environ.items() if CANARY in v}

        # 2. a local production run (nothing fresher on a published copy) with the secret around
        state = production_run(environment="local", return_state=True)
        events["local"] = state
        events["flow_runs"].append(state.state_details.flow_run_id)

        # 3. a run against the Databricks environment, failing on purpose (403 from the "workspace")
        started_failing = time.monotonic()
        state = production_run(environment=ENVIRONMENT, return_state=True)
        events["databricks"] = state
        events["databricks_seconds"] = time.monotonic() - started_failing
        events["flow_runs"].append(state.state_details.flow_run_id)
    events["requests_with_canary"] = sum(CANARY in t for t in _Forbidden.seen_tokens)
    return events


def test_everything_ran_as_intended(exercised):
    assert exercised["parse"][0], exercised["parse"][1]
    assert "env_var(" in exercised["profile_text"] and "DBT_ENV_SECRET_DATABRICKS_TOKEN" in exercised["profile_text"]
    assert CANARY not in exercised["profile_text"]
    assert exercised["environ_after_profile"].keys() == {"DATABRICKS_STAGING_TOKEN"}, "the profile's secret outlived it"
    assert exercised["local"].is_completed(), exercised["local"].message
    failing = exercised["databricks"]
    assert failing.is_failed() and "Error during request to server" in str(failing.message), failing.message
    record_timing("secrets: production run against the Databricks env (403)", f"{exercised['databricks_seconds']:.1f}s")
    assert exercised["requests_with_canary"] >= 1, "the token never reached the stand-in workspace"


def test_canary_not_in_run_states_logs_or_artifacts(exercised):
    from prefect.client.orchestration import get_client

    logs = flow_run_logs(*exercised["flow_runs"])
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(i) for i in exercised["flow_runs"]]
    artifacts = artifacts_of(*exercised["flow_runs"])  # what the runs that held the secret made
    assert len(logs) > 5
    assert artifacts, "the runs made no artifact to search"
    assert not [log.message for log in logs if CANARY in log.message]
    assert not [a.key for a in artifacts if CANARY in f"{a.data} {a.description} {a.metadata_}"]
    assert not [r.name for r in runs if CANARY in f"{r.state.message} {r.parameters}"]


def test_canary_only_in_the_credentials_token_field(exercised):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # every document, every page: a leak may be in any of them
        revealed = read_all(client.read_block_documents, include_secrets=True)
        hidden = read_all(client.read_block_documents, include_secrets=False)
    holders = [(d.name, path) for d in revealed for path in paths_holding(d.data, CANARY)]
    assert holders, "the canary is not registered at all"
    assert all(path[-1] == "token" for _, path in holders), holders
    assert not [d.name for d in hidden if CANARY in repr(d.data)]


def _files_holding(roots, needle: bytes, newer_than: float = 0.0, max_bytes: int = 200_000_000) -> list[str]:
    found = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            continue
        # os.walk, not rglob: another process (a parallel test worker) may remove a temp dir mid-walk
        walked = [root] if root.is_file() else (Path(d) / f for d, _, files in os.walk(root) for f in files)
        for path in walked:
            try:
                if not path.is_file() or path.is_symlink():
                    continue
                info = path.stat()
                if info.st_mtime < newer_than or info.st_size > max_bytes:
                    continue
                if needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


def test_canary_in_no_file(exercised):
    needle = CANARY.encode()
    home, private_tmp = exercised["home"], exercised["private_tmp"]
    prefect_home = Path(os.environ["PREFECT_HOME"])
    assert list(home.rglob("*.duckdb")), "the home searched is not the one the runs used"
    # The rendered profile (the one file that held the token, through env_var) went to the private
    # temp dir searched here, not to the shared /tmp.
    assert Path(exercised["profile_dir"]).parent == private_tmp, exercised["profile_dir"]
    leaks = _files_holding([home, private_tmp, prefect_home, *exercised["targets"], BUNDLED_PROJECT / "target"], needle)
    leaks += _files_holding([tempfile.gettempdir()], needle, newer_than=exercised["started"], max_bytes=20_000_000)
    assert not leaks, f"the canary is written in: {leaks}"
    assert not [p for p in private_tmp.iterdir() if p.name.startswith(PROFILE_DIR_PREFIX)], "a rendered profile was left"


def test_canary_not_in_captured_output(exercised, request):
    """What pytest captured (fd level) while the module fixture ran, and during the tests before this one."""
    from conftest import captured_output

    if request.config.getoption("capture") == "no":
        pytest.skip("output capture is off (-s)")
    output = "".join(captured_output)
    assert "Running with dbt=" in output  # the fixture's dbt output really is in there
    assert CANARY not in output
