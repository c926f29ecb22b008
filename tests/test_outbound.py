"""What runs may call (the outbound policy and its resolver), and what a failed call tells the tenant."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from ipaddress import ip_address
from types import SimpleNamespace

import aiohttp
import pytest
from yarl import URL

from executor.http import FAILURES, EndpointClient
from executor.outbound import CheckingResolver, DestinationDenied, OutboundPolicy
from tests.test_api_actions import app, create, endpoint, wait_for_run  # noqa: F401 - app is a fixture

NOT_GLOBAL = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "::",
    "::1",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "100.100.100.200",  # cloud metadata in CGNAT space
    "169.254.169.254",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",  # cloud metadata over IPv6
    "168.63.129.16",  # Azure wireserver: public space, listed
    "192.0.0.192",
    "192.0.0.8",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.51.100.1",
    "203.0.113.1",
    "198.18.0.1",
    "192.88.99.1",
    "2001:db8::1",
    "3fff::1",
    "fec0::1",
    "100::1",
    "5f00::1",
    "64:ff9b:1::1",
    "2001::1",  # Teredo
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:0:7f00:1",  # IPv4-translated
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::7f00:1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",
    "::7f00:1",  # IPv4-compatible
    "::a00:1",
]
GLOBAL = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", NOT_GLOBAL)
def test_the_default_policy_refuses_what_is_not_globally_routable(address):
    assert OutboundPolicy().refuses(ip_address(address))


@pytest.mark.parametrize("address", GLOBAL)
def test_the_default_policy_allows_global_addresses(address):
    assert not OutboundPolicy().refuses(ip_address(address))


def test_an_allowed_network_wins_over_the_default_refusals_but_never_over_a_denied_one():
    policy = OutboundPolicy(allow=["127.0.0.0/8", "fd00::/8"], deny=["127.0.0.53/32", "8.8.4.0/24"])
    refused = {a: policy.refuses(ip_address(a)) for a in ("127.0.0.1", "::ffff:127.0.0.1", "fd00:ec2::254")}
    assert refused == dict.fromkeys(refused, False)
    assert policy.refuses(ip_address("127.0.0.53")) and policy.refuses(ip_address("::ffff:127.0.0.53"))
    assert policy.refuses(ip_address("10.0.0.1"))  # allowing one network allows no other
    assert not policy.refuses(ip_address("8.8.8.8"))  # global addresses stay callable
    assert policy.refuses(ip_address("8.8.4.4")) and policy.refuses(ip_address("64:ff9b::808:404"))


def test_names_are_checked_where_the_connection_is_made_and_literals_and_proxied_targets_before():
    calls = []

    async def scenario():
        def hang_up(reader, writer):
            calls.append(writer.get_extra_info("sockname"))
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            # localhost may be ::1 as well: with 127.0.0.0/8 allowed, the call goes to 127.0.0.1 only
            for policy, outcome in ((OutboundPolicy(), DestinationDenied), (OutboundPolicy(["127.0.0.0/8"]), None)):
                connector = aiohttp.TCPConnector(resolver=CheckingResolver(policy))
                async with aiohttp.ClientSession(connector=connector) as client:
                    with pytest.raises(outcome or aiohttp.ClientError):  # an allowed call: the server hangs up
                        await client.post(f"http://localhost:{port}/run")
            endpoints = EndpointClient()
            for target, proxy in (("http://127.0.0.1:9/", None), ("http://[::1]/", None), ("http://localhost/", "p")):
                with pytest.raises(DestinationDenied):
                    await endpoints._check(URL(target), proxy)
            with pytest.raises(ValueError):  # a form aiohttp would not connect to either
                await endpoints._check(URL("http://127.1/"), None)

    asyncio.run(scenario())
    assert len(calls) == 1  # only the allowed call connected


def test_a_name_that_does_not_resolve_answers_as_one_that_resolves_to_an_internal_address():
    # Told apart (CONNECTION_ERROR against DESTINATION_DENIED), a tenant could list the executor's internal names.
    run = SimpleNamespace(execution_id="e", run_id="r", action_id="a", resolved_thread_id="t", resolved_payload={})

    async def scenario():
        async with EndpointClient(timeout=10).open() as client:
            internal = await client.call(run, "http://localhost:9/run", None)
            missing = await client.call(run, "http://no-such-host.invalid/run", None)
        policy = OutboundPolicy()
        return internal, missing, await policy.refuses_name("localhost"), await policy.refuses_name("x.invalid")

    internal, missing, internal_refused, missing_refused = asyncio.run(scenario())
    told = ("DESTINATION_DENIED", "The endpoint's host does not resolve to an address runs may call")
    assert (internal.error_code, internal.error_message) == told == (missing.error_code, missing.error_message)
    assert internal_refused and missing_refused  # through a proxy too, where the name is checked before the call


@contextlib.contextmanager
def tcp_service(behaviour):
    """A local TCP service that is not HTTP: `behaviour(connection)` on each connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=behaviour, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/run"
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()


BANNER = b'INFO {"server_id":"NBANNERSECRET","version":"2.10.0","auth_required":true}\r\n'


def banner(connection):
    with connection:
        connection.sendall(BANNER)
        connection.recv(65536)


def closes(connection):
    connection.close()


def resets(connection):
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def silent(connection):
    with connection:
        connection.settimeout(10)
        with contextlib.suppress(OSError):
            connection.recv(65536)
            connection.recv(65536)


def test_a_failed_call_reports_its_code_and_a_fixed_message_never_what_the_other_side_said(api, app):  # noqa: F811
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{unused.getsockname()[1]}/run"  # bound, never listening: refused
    with tcp_service(banner) as nats_like, tcp_service(closes) as closing, tcp_service(resets) as resetting, (
        tcp_service(silent)
    ) as holding:
        urls = {
            "banner": nats_like,
            "refused": refused,
            "closes": closing,
            "resets": resetting,
            "silent": holding,
            "metadata": "http://169.254.169.254/latest/meta-data",
        }
        started = {}
        for name, url in urls.items():
            action = create(api, app, endpoint_id=endpoint(api, app, url), name=name)["action_id"]
            started[name] = (action, api.post(f"{app['actions']}/{action}/trigger", json={}).json()["run_id"])
        failed = {name: wait_for_run(api, app, *run) for name, run in started.items()}
    told = {name: (run["error_code"], run["error_message"]) for name, run in failed.items()}
    connection_error = ("CONNECTION_ERROR", FAILURES["CONNECTION_ERROR"])
    assert told == {
        "banner": connection_error,
        "refused": connection_error,
        "closes": connection_error,
        "resets": connection_error,
        "silent": ("TIMEOUT", FAILURES["TIMEOUT"]),
        "metadata": ("DESTINATION_DENIED", FAILURES["DESTINATION_DENIED"]),
    }
    everything_told = repr(failed)
    assert "INFO" not in everything_told and "NBANNERSECRET" not in everything_told
    assert "169.254" not in FAILURES["DESTINATION_DENIED"]
