"""The vendors' official Python SDKs against vendor-sim: if they accept it, the simulator
speaks the vendors' APIs faithfully enough for the plugins' tests to mean something."""

import json
import os
import urllib.request

import openstack
import pydo
from hcloud import Client as HetznerClient
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType

from conftest import (
    DIGITALOCEAN_TOKEN,
    HETZNER_TOKEN,
    OPENSTACK_PASSWORD,
    OPENSTACK_USER,
    wait_until,
)


def live(sim, vendor):
    with urllib.request.urlopen(f"{sim['url']}/_sim/stats") as answer:
        return json.load(answer)["vendors"][vendor]["live"]


def hcloud_client(sim):
    """A hcloud client for the simulator, polling actions every 0.1 s (the servers boot in
    300 ms) for at most 10 s."""
    return HetznerClient(
        token=HETZNER_TOKEN,
        api_endpoint=f"{sim['url']}/hetzner/v1",
        poll_interval=0.1,
        poll_max_retries=100,
    )


def test_hcloud_creates_gets_lists_by_label_and_deletes(sim):
    """hcloud (Hetzner's official library): create and wait for its actions as a hcloud
    user does, get, list by label, delete and wait for the delete's action."""
    client = hcloud_client(sim)
    created = client.servers.create(
        name="sdk-hcloud-1",
        server_type=ServerType(name="cx22"),
        image=Image(name="ubuntu-24.04"),
        location=Location(name="fsn1"),
        labels={"suite": "sdk"},
    )
    server = created.server
    assert server.id > 0
    assert created.action.command == "create_server"
    assert [a.command for a in created.next_actions] == ["start_server"]

    created.action.wait_until_finished()
    for action in created.next_actions:
        action.wait_until_finished()
    for action in [created.action, *created.next_actions]:
        assert (action.status, action.progress) == ("success", 100)
        assert action.finished is not None and action.error is None
        assert action.resources == [{"id": server.id, "type": "server"}]
    # The action as the server's own actions endpoint shows it.
    start = client.servers.actions.get_by_id(created.next_actions[0].id)
    assert (start.command, start.status) == ("start_server", "success")

    running = client.servers.get_by_id(server.id)
    assert running.status == "running"
    assert running.name == "sdk-hcloud-1"
    assert running.public_net.ipv4.ip.startswith("203.0.")
    assert running.server_type.name == "cx22"
    assert running.location.name == "fsn1"

    listed = client.servers.get_all(label_selector="suite=sdk")
    assert [s.id for s in listed] == [server.id]
    assert client.servers.get_all(label_selector="suite=other") == []

    action = client.servers.delete(running)
    assert action.command == "delete_server"
    action.wait_until_finished()
    assert (action.status, action.progress) == ("success", 100)
    assert client.servers.get_by_name("sdk-hcloud-1") is None
    assert live(sim, "hetzner") == 0


def pydo_wait_until_active(client, droplet_id):
    """Polls the droplet until it is active, as a pydo user does (pydo has no waiter)."""

    def active():
        droplet = client.droplets.get(droplet_id)["droplet"]
        return droplet if droplet["status"] == "active" else None

    return wait_until(active, timeout=10)


def pydo_wait_until_gone(client, droplet_id):
    """Polls the droplet after its destroy until DigitalOcean answers 404 (pydo returns a
    404's error body rather than raising; `cls` hands over the status too)."""

    def gone():
        status, body = client.droplets.get(
            droplet_id,
            cls=lambda pipeline, body, _headers: (pipeline.http_response.status_code, body),
        )
        if status == 404:
            assert body["id"] == "not_found", body
            return True
        assert status == 200 and body["droplet"]["id"] == droplet_id, (status, body)
        return False

    wait_until(gone, timeout=10)


def pydo_client(sim):
    """A pydo client for the simulator, over HTTPS trusting the simulator's CA."""
    return pydo.Client(
        token=DIGITALOCEAN_TOKEN,
        endpoint=f"{sim['tls_url']}/digitalocean",
        connection_verify=sim["ca"],
    )


def droplet_body(name, **more):
    """A droplet create's body: `name`, a region, size and image the simulator knows, and
    `more` fields."""
    return {
        "name": name,
        "region": "nyc3",
        "size": "s-1vcpu-1gb",
        "image": "ubuntu-24-04-x64",
        **more,
    }


def test_pydo_creates_gets_lists_by_tag_and_deletes(sim):
    """pydo (DigitalOcean's official client), over HTTPS trusting the simulator's CA:
    create, get, list by tag, delete."""
    client = pydo_client(sim)
    created = client.droplets.create(
        body=droplet_body("sdk-pydo-1", tags=["suite:sdk"]),
    )
    droplet_id = created["droplet"]["id"]
    assert created["droplet"]["status"] == "new"

    droplet = pydo_wait_until_active(client, droplet_id)
    public = [n for n in droplet["networks"]["v4"] if n["type"] == "public"]
    assert public and public[0]["ip_address"].startswith("203.0.")

    listed = client.droplets.list(tag_name="suite:sdk")
    assert [d["id"] for d in listed["droplets"]] == [droplet_id]
    assert listed["meta"]["total"] == 1

    client.droplets.destroy(droplet_id)
    pydo_wait_until_gone(client, droplet_id)
    assert live(sim, "digitalocean") == 0


def openstack_connection(sim, tmp_path, monkeypatch):
    """An openstacksdk connection to the simulator's cloud `sim`, read from a clouds.yaml in
    `tmp_path` (no other `OS_` variable of the environment in the way)."""
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n"
        "  sim:\n"
        "    auth:\n"
        f"      auth_url: {sim['url']}/openstack/identity/v3\n"
        f"      username: {OPENSTACK_USER}\n"
        f"      password: {OPENSTACK_PASSWORD}\n"
        "      project_name: provisioner\n"
        "      user_domain_name: Default\n"
        "      project_domain_name: Default\n"
        "    region_name: RegionOne\n"
        "    identity_api_version: 3\n"
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    for variable in [v for v in os.environ if v.startswith("OS_") and v != "OS_CLIENT_CONFIG_FILE"]:
        monkeypatch.delenv(variable)
    return openstack.connect(cloud="sim")


def test_openstacksdk_authenticates_from_clouds_yaml_and_manages_a_server(
    sim, tmp_path, monkeypatch
):
    """openstacksdk: a clouds.yaml cloud, then create, get, list, delete a server."""
    conn = openstack_connection(sim, tmp_path, monkeypatch)

    flavor = conn.compute.find_flavor("m1.small")
    assert flavor is not None
    image = conn.image.find_image("ubuntu-24.04")
    assert image is not None

    server = conn.compute.create_server(
        name="sdk-openstack-1",
        flavor_id=flavor.id,
        image_id=image.id,
        metadata={"suite": "sdk"},
    )
    server = conn.compute.wait_for_server(server, status="ACTIVE", interval=0.1, wait=10)
    assert server.name == "sdk-openstack-1"
    addresses = [a["addr"] for net in server.addresses.values() for a in net if a["version"] == 4]
    assert addresses and addresses[0].startswith("203.0.")

    fetched = conn.compute.get_server(server.id)
    assert fetched.metadata == {"suite": "sdk"}
    listed = list(conn.compute.servers(name="sdk-openstack-1"))
    assert [s.id for s in listed] == [server.id]

    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=0.1, wait=10)
    assert live(sim, "openstack") == 0


PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM1MQrOGZkyTYSLN/FGDhozOMWieTtIaVBkR5a83m5IW sdk@test"
)
# `ssh-keygen -l -E md5` of PUBLIC_KEY.
FINGERPRINT = "ee:2f:9b:a5:e1:38:9d:d3:ec:ac:76:2c:ec:70:6b:d9"
USER_DATA = "#cloud-config\nruncmd:\n  - echo sdk\n"


def sim_server(sim, vendor, name):
    """The simulator's record of a server: the SSH keys and user data it got."""
    with urllib.request.urlopen(f"{sim['url']}/_sim/servers") as answer:
        servers = json.load(answer)["servers"]
    return next(s for s in servers if s["vendor"] == vendor and s["name"] == name)


def test_hcloud_files_an_ssh_key_and_a_server_gets_it(sim):
    """hcloud: file a key, find it by fingerprint, refuse it twice, create a server with it
    and user data; the simulated server got both."""
    from hcloud import APIException

    client = hcloud_client(sim)
    key = client.ssh_keys.create(name="sdk-key", public_key=PUBLIC_KEY, labels={"suite": "sdk"})
    assert key.fingerprint == FINGERPRINT
    assert client.ssh_keys.get_by_fingerprint(FINGERPRINT).id == key.id
    assert client.ssh_keys.get_by_name("sdk-key").id == key.id
    try:
        client.ssh_keys.create(name="sdk-key-2", public_key=PUBLIC_KEY)
        raise AssertionError("a second key with the same fingerprint was filed")
    except APIException as error:
        assert error.code == "uniqueness_error"

    created = client.servers.create(
        name="sdk-hcloud-keys",
        server_type=ServerType(name="cx22"),
        image=Image(name="ubuntu-24.04"),
        location=Location(name="fsn1"),
        ssh_keys=[key],
        user_data=USER_DATA,
    )
    created.action.wait_until_finished()
    for action in created.next_actions:
        action.wait_until_finished()
    assert client.servers.get_by_id(created.server.id).status == "running"
    got = sim_server(sim, "hetzner", "sdk-hcloud-keys")
    assert got["ssh_keys"] == [PUBLIC_KEY]
    assert got["user_data"] == USER_DATA
    client.servers.delete(created.server).wait_until_finished()
    client.ssh_keys.delete(key)
    assert client.ssh_keys.get_by_fingerprint(FINGERPRINT) is None


def test_pydo_files_an_ssh_key_and_a_droplet_gets_it(sim):
    """pydo: file a key, get it by fingerprint, create a droplet with it and user data."""
    client = pydo_client(sim)
    filed = client.ssh_keys.create(body={"name": "sdk-key", "public_key": PUBLIC_KEY})
    key = filed["ssh_key"]
    assert key["fingerprint"] == FINGERPRINT
    assert client.ssh_keys.get(ssh_key_identifier=FINGERPRINT)["ssh_key"]["id"] == key["id"]
    assert [k["id"] for k in client.ssh_keys.list()["ssh_keys"]] == [key["id"]]

    created = client.droplets.create(
        body=droplet_body("sdk-pydo-keys", ssh_keys=[key["id"]], user_data=USER_DATA),
    )
    droplet_id = created["droplet"]["id"]
    pydo_wait_until_active(client, droplet_id)
    got = sim_server(sim, "digitalocean", "sdk-pydo-keys")
    assert got["ssh_keys"] == [PUBLIC_KEY]
    assert got["user_data"] == USER_DATA
    client.droplets.destroy(droplet_id)
    pydo_wait_until_gone(client, droplet_id)
    client.ssh_keys.delete(ssh_key_identifier=key["id"])


def test_openstacksdk_passes_user_data_that_carries_keys(sim, tmp_path, monkeypatch):
    """openstacksdk: user data (base64, as Nova wants it) reaches the server; the keys its
    cloud-config lists are the keys the server gets."""
    import base64

    conn = openstack_connection(sim, tmp_path, monkeypatch)
    config = f"#cloud-config\nssh_authorized_keys:\n  - {PUBLIC_KEY}\n"
    server = conn.compute.create_server(
        name="sdk-openstack-keys",
        flavor_id=conn.compute.find_flavor("m1.small").id,
        image_id=conn.image.find_image("ubuntu-24.04").id,
        user_data=base64.b64encode(config.encode()).decode(),
    )
    server = conn.compute.wait_for_server(server, status="ACTIVE", interval=0.1, wait=10)
    got = sim_server(sim, "openstack", "sdk-openstack-keys")
    assert got["user_data"] == config
    assert got["ssh_keys"] == [PUBLIC_KEY]
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=0.1, wait=10)


GCP_PROJECT = "sdk-project"
GCP_ZONE = "us-central1-a"
COMPUTE_SCOPE = "https://www.googleapis.com/auth/compute"


def gcp_service_account(sim, email):
    """A fresh service-account key JSON whose token_uri is the simulator (over HTTPS), its
    public half registered with the simulator as Google holds a downloaded key's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    register = urllib.request.Request(
        f"{sim['url']}/_sim/gcp/service-accounts",
        data=json.dumps(
            {"client_email": email, "project_id": GCP_PROJECT, "public_key": public_pem}
        ).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(register) as answer:
        assert answer.status == 201
    return {
        "type": "service_account",
        "project_id": GCP_PROJECT,
        "private_key_id": "sdk-key-1",
        "private_key": private_pem,
        "client_email": email,
        "client_id": "100000000000000000001",
        "token_uri": f"{sim['tls_url']}/gcp/token",
    }


def compute_instance(name, suite):
    """An instance as a GCP plugin asks for it: machine type, image family, labels, SSH keys
    and user data as metadata."""
    from google.cloud import compute_v1

    return compute_v1.Instance(
        name=name,
        machine_type=f"zones/{GCP_ZONE}/machineTypes/e2-small",
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image="projects/debian-cloud/global/images/family/debian-12"
                ),
            )
        ],
        network_interfaces=[
            compute_v1.NetworkInterface(
                network="global/networks/default",
                access_configs=[compute_v1.AccessConfig(type_="ONE_TO_ONE_NAT")],
            )
        ],
        labels={"suite": suite, "provisioner-idempotency-key": f"key-{name}"},
        metadata=compute_v1.Metadata(
            items=[
                compute_v1.Items(key="ssh-keys", value=f"root:{PUBLIC_KEY}"),
                compute_v1.Items(key="user-data", value=USER_DATA),
            ]
        ),
    )


def compute_client(sim, credentials):
    """An InstancesClient at the simulator. The client makes the ZoneOperationsClient its
    operations' result() polls with the default endpoint, not the client's api_endpoint (the
    transport's `_zone_operations_client` passes only credentials and transport), so that
    one is made here, at the simulator, and handed to the transport where it looks first."""
    from google.cloud import compute_v1

    options = {"api_endpoint": f"{sim['tls_url']}/gcp"}
    client = compute_v1.InstancesClient(
        credentials=credentials, client_options=options, transport="rest"
    )
    client._transport._extended_operations_services["zone_operations"] = (
        compute_v1.ZoneOperationsClient(
            credentials=credentials, client_options=options, transport="rest"
        )
    )
    return client


def test_google_auth_exchanges_a_service_account_jwt_at_the_token_uri(sim, monkeypatch):
    """google-auth: a service account's JWT grant at its token_uri (the simulator) buys an
    access token that the Compute client (google-cloud-compute) is then served with."""
    import google.auth.transport.requests
    import google.oauth2.credentials
    import requests
    from google.oauth2 import service_account

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim["ca"])
    info = gcp_service_account(sim, "sdk-token@sdk-project.iam.gserviceaccount.com")
    credentials = service_account.Credentials.from_service_account_info(
        info, scopes=[COMPUTE_SCOPE]
    )
    credentials.refresh(google.auth.transport.requests.Request())
    assert credentials.token.startswith("ya29.sim-")
    assert credentials.valid and credentials.expiry is not None

    client = compute_client(sim, google.oauth2.credentials.Credentials(token=credentials.token))
    operation = client.insert(
        project=GCP_PROJECT,
        zone=GCP_ZONE,
        instance_resource=compute_instance("sdk-gcp-token", "sdk-token"),
    )
    operation.result(timeout=30)
    assert client.get(project=GCP_PROJECT, zone=GCP_ZONE, instance="sdk-gcp-token").status == "RUNNING"
    client.delete(project=GCP_PROJECT, zone=GCP_ZONE, instance="sdk-gcp-token").result(timeout=30)

    # A token the simulator never issued is a 401 in Google's shape.
    refused = requests.get(
        f"{sim['tls_url']}/gcp/compute/v1/projects/{GCP_PROJECT}/aggregated/instances",
        headers={"Authorization": "Bearer ya29.made-up"},
        verify=sim["ca"],
    )
    assert refused.status_code == 401
    assert refused.json()["error"]["status"] == "UNAUTHENTICATED"


def test_google_cloud_compute_creates_waits_gets_lists_by_label_and_deletes(sim, monkeypatch):
    """google-cloud-compute with google-auth service-account credentials, over HTTPS
    trusting the simulator's CA: insert with a requestId and wait with the operation's own
    result(), get, aggregated_list filtered by label over every page, delete and wait. With
    service-account credentials the client authenticates with self-signed JWTs (AIP-4111),
    which the simulator checks as Google does; the token_uri exchange is the test above."""
    import uuid

    from google.api_core import exceptions
    from google.cloud import compute_v1
    from google.oauth2 import service_account

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim["ca"])
    info = gcp_service_account(sim, "sdk@sdk-project.iam.gserviceaccount.com")
    credentials = service_account.Credentials.from_service_account_info(info)
    client = compute_client(sim, credentials)

    names = ["sdk-gcp-1", "sdk-gcp-2", "sdk-gcp-3"]
    request_id = str(uuid.uuid4())
    insert = compute_v1.InsertInstanceRequest(
        project=GCP_PROJECT,
        zone=GCP_ZONE,
        instance_resource=compute_instance(names[0], "sdk"),
        request_id=request_id,
    )
    operation = client.insert(request=insert)
    assert operation.status == compute_v1.Operation.Status.RUNNING
    operation.result(timeout=30)
    assert operation.done() and not operation.error_code and not operation.error_message
    # The same requestId again: the same (now finished) operation, no second instance.
    again = client.insert(request=insert)
    assert again.name == operation.name and again.done()
    for name in names[1:]:
        client.insert(
            project=GCP_PROJECT, zone=GCP_ZONE, instance_resource=compute_instance(name, "sdk")
        ).result(timeout=30)
    client.insert(
        project=GCP_PROJECT,
        zone=GCP_ZONE,
        instance_resource=compute_instance("sdk-gcp-other", "other"),
    ).result(timeout=30)

    instance = client.get(project=GCP_PROJECT, zone=GCP_ZONE, instance=names[0])
    assert instance.status == "RUNNING"
    assert instance.labels["provisioner-idempotency-key"] == f"key-{names[0]}"
    assert instance.machine_type.endswith(f"/zones/{GCP_ZONE}/machineTypes/e2-small")
    assert instance.network_interfaces[0].access_configs[0].nat_i_p.startswith("203.0.")
    got = sim_server(sim, "gcp", names[0])
    assert got["ssh_keys"] == [PUBLIC_KEY]
    assert got["user_data"] == USER_DATA

    pager = client.aggregated_list(
        request=compute_v1.AggregatedListInstancesRequest(
            project=GCP_PROJECT, filter="labels.suite = sdk", max_results=2
        )
    )
    listed = []
    pages = 0
    for page in pager.pages:
        pages += 1
        for scope, scoped in page.items.items():
            listed += [(scope, i.name) for i in scoped.instances]
    assert pages == 2
    assert sorted(listed) == [(f"zones/{GCP_ZONE}", name) for name in names]

    try:
        client.insert(
            project=GCP_PROJECT, zone=GCP_ZONE, instance_resource=compute_instance(names[0], "sdk")
        )
        raise AssertionError("a second instance with a taken name was made")
    except exceptions.Conflict:
        pass

    for name in [*names, "sdk-gcp-other"]:
        client.delete(project=GCP_PROJECT, zone=GCP_ZONE, instance=name).result(timeout=30)
    try:
        client.get(project=GCP_PROJECT, zone=GCP_ZONE, instance=names[0])
        raise AssertionError("a deleted instance is still there")
    except exceptions.NotFound:
        pass
    assert live(sim, "gcp") == 0
    with urllib.request.urlopen(f"{sim['url']}/_sim/stats") as answer:
        assert json.load(answer)["vendors"]["gcp"]["duplicates"] == {}
