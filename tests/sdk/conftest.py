"""Starts the real vendor-sim binary on a free port for the SDK fidelity checks."""

import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))

HETZNER_TOKEN = "sdk-hetzner-token"
DIGITALOCEAN_TOKEN = "sdk-digitalocean-token"
OPENSTACK_USER = "provisioner"
OPENSTACK_PASSWORD = "sdk-openstack-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    """A running vendor-sim (servers boot in 300 ms): its HTTP URL, its HTTPS URL and the
    path of the CA certificate its HTTPS port is signed by."""
    binary = TARGET / "debug" / "vendor-sim"
    assert binary.exists(), (
        f"{binary} is missing: build it with `cargo build --workspace --bins` "
        "(scripts/test.sh does all the set-up)"
    )
    port = free_port()
    tls_port = free_port()
    folder = tmp_path_factory.mktemp("sim")
    log = folder / "sim.log"
    ca = folder / "sim-ca.pem"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RUST_LOG": "info",
        "SIM_LISTEN_ADDR": f"127.0.0.1:{port}",
        "SIM_BOOT_DELAY_MS": "300",
        "SIM_HETZNER_TOKEN": HETZNER_TOKEN,
        "SIM_DIGITALOCEAN_TOKEN": DIGITALOCEAN_TOKEN,
        "SIM_OPENSTACK_USER": OPENSTACK_USER,
        "SIM_OPENSTACK_PASSWORD": OPENSTACK_PASSWORD,
        "SIM_TLS_LISTEN_ADDR": f"127.0.0.1:{tls_port}",
        "SIM_TLS_CA_OUT": str(ca),
    }
    with open(log, "w") as out:
        process = subprocess.Popen([str(binary)], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/_sim/stats", timeout=1)
            if ca.exists():
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"vendor-sim did not start; see {log}")
            time.sleep(0.05)
    yield {"url": url, "tls_url": f"https://127.0.0.1:{tls_port}", "ca": str(ca)}
    process.terminate()
    process.wait(timeout=10)


def wait_until(predicate, timeout=15.0, interval=0.1):
    """Polls `predicate` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
