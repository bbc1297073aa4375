"""Login sequences as the fake Twitch server sees them, token hygiene, and TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import re
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reelhouse.archive.twitch.chat_events import ChatMessage, Notice, RoomState
from reelhouse.archive.twitch.irc_client import TwitchChatClient
from tests.fakes.twitch_irc import FakeTwitchIrcServer

CAP_LINE = "CAP REQ :twitch.tv/tags twitch.tv/commands"


async def test_anonymous_login_uses_justinfan_and_no_pass(irc_server, make_client, collect):
    client = make_client(["dallas"])
    events = collect(client)
    await client.start()
    conn = await irc_server.wait_until_joined(["dallas"])
    assert conn.received[0] == CAP_LINE
    assert re.fullmatch(r"NICK justinfan\d+", conn.received[1])
    assert not any(line.startswith("PASS") for line in conn.received)
    assert conn.received[2] == "JOIN #dallas"
    assert conn.caps == {"twitch.tv/tags", "twitch.tv/commands"}
    assert not conn.authenticated
    # The server's ROOMSTATE after JOIN reaches the consumer as a typed event.
    await events.wait_for(lambda evs: any(isinstance(e, RoomState) for e in evs))
    assert client.connected


async def test_oauth_login_adds_prefix_and_lowercases_nick(irc_server, make_client):
    client = make_client(["dallas"], token="abc123", nick="MyBot")
    await client.start()
    conn = await irc_server.wait_until_joined(["dallas"])
    assert conn.received[:3] == [CAP_LINE, "PASS oauth:abc123", "NICK mybot"]
    assert conn.authenticated and conn.nick == "mybot"


async def test_token_with_prefix_is_not_doubled(irc_server, make_client):
    client = make_client(["dallas"], token="oauth:abc123", nick="mybot")
    await client.start()
    conn = await irc_server.wait_until_joined(["dallas"])
    assert conn.received[1] == "PASS oauth:abc123"


async def test_token_provider_is_asked_again_at_each_connect(irc_server, make_client):
    tokens = iter(["first-token", "refreshed-token"])

    async def provide_token() -> str:
        return next(tokens)

    client = make_client(["dallas"], token=provide_token, nick="mybot")
    await client.start()
    first = await irc_server.wait_until_joined(["dallas"])
    await irc_server.drop_clients()
    await irc_server.wait_for_connections(2)
    second = await irc_server.wait_until_joined(["dallas"])
    assert first.received[1] == "PASS oauth:first-token"
    assert second.received[1] == "PASS oauth:refreshed-token"


async def test_rejected_token_is_reported_and_retried_with_backoff(make_client, collect):
    async with FakeTwitchIrcServer(accepted_tokens={"good-token"}) as server:
        client = make_client(["dallas"], token="bad-token", nick="mybot", host=server.host, port=server.port)
        events = collect(client)
        await client.start()
        await server.wait_for_connections(3)
        await events.wait_for(lambda evs: len([e for e in evs if isinstance(e, Notice)]) >= 2)
        notice = events.of_type(Notice)[0]
        assert notice.text == "Login authentication failed" and notice.channel is None
        assert client.stats.auth_failures >= 2
        assert client.stats.reconnections == 0 and client.stats.connect_failures >= 2
        assert not client.connected


async def test_token_never_reaches_the_logs(irc_server, make_client, collect, caplog):
    secret = "zz9plural-z-alpha-token"
    caplog.set_level(logging.DEBUG)
    client = make_client(["dallas"], token=secret, nick="mybot")
    events = collect(client)
    await client.start()
    await irc_server.wait_until_joined(["dallas"])
    await irc_server.send_privmsg("dallas", "hello")
    await irc_server.drop_clients()  # the reconnect path logs too
    await irc_server.wait_for_connections(2)
    await irc_server.wait_until_joined(["dallas"])
    await events.wait_for(lambda evs: any(isinstance(e, ChatMessage) for e in evs))
    await client.stop()
    assert irc_server.connections[0].received[1] == f"PASS oauth:{secret}"  # it was really sent
    assert "PASS oauth:***" in caplog.text  # and the send path was logged, masked
    assert secret not in caplog.text
    assert all(secret not in str(record.args) for record in caplog.records)


async def test_provided_token_that_would_split_the_line_is_never_sent(irc_server, make_client, caplog):
    async def provide_token() -> str:
        return "tok\r\nPRIVMSG #dallas :injected"

    caplog.set_level(logging.DEBUG)
    client = make_client(["dallas"], token=provide_token, nick="mybot")
    await client.start()
    async with asyncio.timeout(5):
        while client.stats.auth_failures < 2:
            await asyncio.sleep(0.01)
    assert irc_server.connections == []  # refused before connecting
    assert "injected" not in caplog.text


def _self_signed_context() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server context with a fresh self-signed certificate for 127.0.0.1, and a client
    context that trusts exactly that certificate (so hostname checks stay on)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain only reads files.
    with tempfile.NamedTemporaryFile() as cert_file, tempfile.NamedTemporaryFile() as key_file:
        cert_file.write(cert_pem)
        key_file.write(key_pem)
        cert_file.flush()
        key_file.flush()
        server_ctx.load_cert_chain(cert_file.name, key_file.name)
    client_ctx = ssl.create_default_context(cadata=cert_pem.decode())
    return server_ctx, client_ctx


async def test_tls_connection(make_client, collect):
    server_ctx, client_ctx = _self_signed_context()
    async with FakeTwitchIrcServer(ssl_context=server_ctx) as server:
        client = make_client(["dallas"], host=server.host, port=server.port, tls=client_ctx)
        events = collect(client)
        await client.start()
        await server.wait_until_joined(["dallas"])
        sent = await server.send_privmsg("dallas", "over TLS 🔒")
        await events.wait_for(lambda evs: any(isinstance(e, ChatMessage) for e in evs))
        (received,) = events.of_type(ChatMessage)
        assert (received.message_id, received.text) == (sent.message_id, "over TLS 🔒")


def test_tls_defaults_to_twitch_tls_port():
    assert "port=6697" in repr(TwitchChatClient(["dallas"], tls=True))
    assert "port=6667" in repr(TwitchChatClient(["dallas"]))
