"""Identity, quotas, auth edges and outbound calls, against a real server."""

from __future__ import annotations

import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest

from palaestra.agents.client import Client, PalaestraError
from palaestra.server.app import ServerThread
from palaestra.server.config import ConfigError, PrincipalConfig, load_config
from palaestra.v1 import env_pb2, env_pb2_grpc

StartServer = Callable[..., ServerThread]
ONLY_ECHO = ["code", "math", "games", "tools"]
PRINCIPALS = {
    "alice": PrincipalConfig(token="alice-token", max_episodes=2),
    "bob": PrincipalConfig(token="bob-token"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tokens_name_principals_with_quotas_across_streams(start_server: StartServer) -> None:
    server = start_server(disabled_plugins=ONLY_ECHO, principals=PRINCIPALS)
    with (
        Client(server.address, token="alice-token") as one,
        Client(server.address, token="alice-token") as two,
    ):
        assert one.server_info().principal == "alice"
        one.open("echo/text")
        two.open("echo/text")  # a second stream of the same principal shares its quota
        with pytest.raises(PalaestraError) as over:
            two.open("echo/text")
        assert over.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 2" in over.value.message
        info = one.server_info()
        assert (info.episodes_held, info.max_episodes_per_client) == (2, 2)
    with Client(server.address, token="nobody") as stranger, pytest.raises(PalaestraError) as refused:
        stranger.list_envs()
    assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED


def test_unary_episodes_belong_to_the_principal_and_no_header_claims_them(start_server: StartServer) -> None:
    server = start_server(disabled_plugins=ONLY_ECHO, principals=PRINCIPALS)
    alice = [("authorization", "bearer alice-token")]  # the scheme is case-insensitive
    bob = [("authorization", "Bearer bob-token"), ("x-palaestra-client", "alice")]
    with grpc.insecure_channel(server.address) as first, grpc.insecure_channel(server.address) as second:
        opened = env_pb2_grpc.EnvServiceStub(first).Open(
            env_pb2.OpenRequest(env_id="echo/text"), metadata=alice
        )
        episode_id = opened.episodes[0].episode_id
        close = env_pb2.CloseRequest(episode_ids=[episode_id])
        with pytest.raises(grpc.RpcError) as foreign:
            env_pb2_grpc.EnvServiceStub(second).CloseEpisodes(close, metadata=bob)
        assert foreign.value.code() is grpc.StatusCode.NOT_FOUND
        # The owner may use it from any connection: identity is the token, not the connection.
        closed = env_pb2_grpc.EnvServiceStub(second).CloseEpisodes(close, metadata=alice)
        assert closed.summaries[0].episode_id == episode_id


def test_without_auth_identity_is_the_connection(start_server: StartServer) -> None:
    server = start_server(disabled_plugins=ONLY_ECHO)
    claim = [("x-palaestra-client", "shared-label")]
    with (
        grpc.insecure_channel(server.address) as first,
        grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as second,
    ):
        opened = env_pb2_grpc.EnvServiceStub(first).Open(
            env_pb2.OpenRequest(env_id="echo/text"), metadata=claim
        )
        close = env_pb2.CloseRequest(episode_ids=[opened.episodes[0].episode_id])
        with pytest.raises(grpc.RpcError) as foreign:
            env_pb2_grpc.EnvServiceStub(second).CloseEpisodes(close, metadata=claim)
        assert foreign.value.code() is grpc.StatusCode.NOT_FOUND
        assert env_pb2_grpc.EnvServiceStub(first).CloseEpisodes(close).summaries


def test_metrics_want_the_token_and_tokens_without_tls_warn(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = _free_port()
    with caplog.at_level(logging.WARNING, logger="palaestra.server"):
        start_server(disabled_plugins=ONLY_ECHO, auth_token="s3cret", metrics_port=port)
    assert any("TLS is off" in r.getMessage() for r in caplog.records)
    url = f"http://127.0.0.1:{port}/metrics"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    request = urllib.request.Request(url, headers={"Authorization": "BEARER s3cret"})
    assert b"palaestra_episodes_open" in urllib.request.urlopen(request, timeout=10).read()


def test_principals_config_is_checked(tmp_path: Any) -> None:
    path = tmp_path / "palaestra.toml"
    path.write_text(
        '[principals.a]\ntoken_env = "A_TOKEN"\nmax_episodes = 3\n[llm.judge]\nbase_url = "http://x/v1"\n'
    )
    config = load_config(path, environ={"A_TOKEN": "t"})
    assert config.principals["a"].max_episodes == 3 and config.llm["judge"]["base_url"] == "http://x/v1"
    with pytest.raises(ConfigError, match="needs a token"):
        load_config(path, environ={})
    path.write_text('[principals.a]\ntoken = "t"\n[principals.b]\ntoken = "t"\n')
    with pytest.raises(ConfigError, match="share a token"):
        load_config(path, environ={})


# ---------------------------------------------------------------- no client-chosen outbound calls


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_POST(self) -> None:
        type(self).seen.append(self.path)
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[str]:
    _Recorder.seen = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{http.server_address[1]}"
    http.shutdown()
    http.server_close()


def test_clients_pick_llm_endpoints_by_name_only(start_server: StartServer, listener: str) -> None:
    server = start_server(
        disabled_plugins=["code", "math", "games"],
        llm={"sim": {"base_url": f"{listener}/configured/v1", "model": "m", "timeout_s": 5}},
    )
    with Client(server.address) as client:
        hostile = {"base_url": f"{listener}/hostile/v1", "api_key_env": "HOME"}
        with pytest.raises(PalaestraError) as refused:
            client.open("tools/shop", options={"user_model": hostile})
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(PalaestraError) as unknown:
            client.open("tools/shop", options={"user_model": "elsewhere"})
        assert unknown.value.code is grpc.StatusCode.INVALID_ARGUMENT
        # The configured endpoint is used (this stub fails, so the episode is an infrastructure failure).
        [episode] = client.open("tools/shop", options={"user_model": "sim"})
        assert episode.infra_failure is not None
    assert _Recorder.seen == ["/configured/v1/chat/completions"]


def test_principals_have_a_quota_of_episodes_with_sandboxes(start_server: StartServer) -> None:
    principals = {"carol": PrincipalConfig(token="carol-token", max_sandboxes=1)}
    server = start_server(disabled_plugins=["math", "games", "tools"], principals=principals)
    with Client(server.address, token="carol-token") as client:
        assert client.server_info().max_sandboxes_per_client == 1
        client.open("code/python-repair", task="fizzbuzz-word")  # leases sandboxes: counts
        client.open("echo")  # no sandboxes: does not count
        with pytest.raises(PalaestraError) as over:
            client.open("code/python-repair", task="fizzbuzz-word")
        assert over.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "sandboxes" in over.value.message
