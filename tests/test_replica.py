"""A process's replica id and internal address (bridge/replica.py)."""

from __future__ import annotations

import socket

import pytest

from bridge.config import load_settings
from bridge.replica import internal_listen_port, replica_identity


def test_one_process_is_named_by_its_host_and_port_and_reached_on_its_internal_port() -> None:
    settings = load_settings({"POD_IP": "10.1.2.3"})
    me = replica_identity(settings, port=8080, internal_port=41234)
    assert me.replica_id == f"{socket.gethostname()}:8080"
    assert me.internal_url == "http://10.1.2.3:41234"
    again = replica_identity(settings, port=8080, internal_port=41234)
    assert again.replica_id == me.replica_id and again.incarnation != me.incarnation  # a new run


def test_a_worker_adds_its_index_and_is_reached_on_its_own_port() -> None:
    settings = load_settings(
        {
            "REPLICA_ID": "bridge-7f9c",
            "INTERNAL_URL": "https://bridge-7f9c.internal:8443",
            "INTERNAL_PORT": "8443",
        }
    )
    worker = replica_identity(settings, port=8080, worker=3, internal_port=40123)
    assert worker.replica_id == "bridge-7f9c/w3"
    assert worker.internal_url == "https://bridge-7f9c.internal:40123"
    # One process advertises INTERNAL_URL as given (it leads to INTERNAL_PORT, perhaps through NAT).
    one = replica_identity(settings, port=8080, internal_port=8443)
    assert one.internal_url == "https://bridge-7f9c.internal:8443"


def test_the_internal_port_is_internal_port_plus_the_workers_index_or_any() -> None:
    assert internal_listen_port(load_settings({}), None) == 0
    assert internal_listen_port(load_settings({}), 2) == 0
    assert internal_listen_port(load_settings({"INTERNAL_PORT": "8081"}), None) == 8081
    assert internal_listen_port(load_settings({"INTERNAL_PORT": "8081", "WORKERS": "4"}), 2) == 8083


def test_the_internal_host_falls_back_to_host_then_the_outward_address() -> None:
    def url(env: dict[str, str]) -> str:
        return replica_identity(load_settings(env), port=9000, internal_port=9100).internal_url

    assert url({"HOST": "127.0.0.1"}) == "http://127.0.0.1:9100"
    assert url({"POD_IP": "fd00::5"}) == "http://[fd00::5]:9100"
    outward = url({})
    assert outward.startswith("http://") and outward.endswith(":9100") and "0.0.0.0" not in outward


def test_process_settings_are_checked() -> None:
    from bridge.config import ConfigError

    assert load_settings({"WORKERS": "auto"}).worker_count >= 1
    assert load_settings({"WORKERS": "3"}).worker_count == 3
    for bad, message in (
        ({"WORKERS": "0"}, "WORKERS must be a number of processes"),
        ({"WORKERS": "many"}, "WORKERS must be a number of processes"),
        ({"WORKERS": "2", "PORT": "0"}, "PORT must be a fixed port"),
        ({"LEASE_SECONDS": "6", "LEASE_RENEW_SECONDS": "5"}, "at least twice LEASE_RENEW_SECONDS"),
        ({"INTERNAL_URL": "10.0.0.5:8080"}, "INTERNAL_URL must be the http\\(s\\) base URL"),
        ({"WORKERS": "4", "INTERNAL_PORT": "65534"}, "no room for a port per worker"),
        ({"WORKERS": "4", "INTERNAL_PORT": "8078"}, "INTERNAL_PORT must differ from PORT"),
        ({"INTERNAL_URL": "http://10.0.0.5:8081"}, "INTERNAL_URL needs INTERNAL_PORT"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(bad)
