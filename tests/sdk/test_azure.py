"""Microsoft's official Azure SDKs against vendor-sim's Azure Resource Manager subset:
azure-identity's ClientSecretCredential gets its token from the simulator's identity-platform
endpoint, and azure-mgmt-resource/-network/-compute make, wait for (their pollers' result()),
get, list and delete a server (public IP, NIC, VM) over HTTPS, as an Azure plugin does."""

import base64
import json
import urllib.request

import pytest

from test_sdks import PUBLIC_KEY, USER_DATA, sim_server

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "0a1b2c3d-0000-4000-8000-00000000a2b3"
CLIENT_SECRET = "sdk~azure.secret"
SUBSCRIPTION = "6f1a9c2e-0000-4000-8000-0000000000aa"
GROUP = "sdk-rg"
LOCATION = "westeurope"
ARM_SCOPE = "https://management.azure.com/.default"


def sim_post(sim, path, body):
    request = urllib.request.Request(
        f"{sim['url']}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as answer:
        return answer.status


def sim_get(sim, path):
    with urllib.request.urlopen(f"{sim['url']}{path}") as answer:
        return json.load(answer)


def linux_signed_in_by_key():
    """A VM's `os_profile.linux_configuration`: no password, `PUBLIC_KEY` for azureuser."""
    return {
        "disable_password_authentication": True,
        "ssh": {
            "public_keys": [
                {"path": "/home/azureuser/.ssh/authorized_keys", "key_data": PUBLIC_KEY}
            ]
        },
    }


@pytest.fixture
def azure(sim, monkeypatch):
    """An app registered with the simulator, its credential (the simulator as authority, over
    HTTPS trusting its CA) and the management clients' common arguments."""
    from azure.identity import ClientSecretCredential

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim["ca"])
    status = sim_post(
        sim,
        "/_sim/azure/apps",
        {
            "tenant_id": TENANT,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "subscription_id": SUBSCRIPTION,
        },
    )
    assert status == 201
    credential = ClientSecretCredential(
        TENANT,
        CLIENT_ID,
        CLIENT_SECRET,
        authority=f"{sim['tls_url']}/azure",
        # MSAL asks login.microsoftonline.com whether an unknown authority is genuine.
        disable_instance_discovery=True,
    )
    options = {"base_url": f"{sim['tls_url']}/azure", "credential_scopes": [ARM_SCOPE]}
    return credential, options


def test_azure_identity_gets_a_token_and_refuses_a_wrong_secret(sim, azure):
    """ClientSecretCredential: the client-credentials grant at the simulator's token endpoint;
    a wrong secret is AAD's invalid_client (AADSTS7000215), which azure-identity raises as a
    ClientAuthenticationError."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ClientSecretCredential

    credential, _ = azure
    token = credential.get_token(ARM_SCOPE)
    assert token.token.count(".") == 2
    assert token.expires_on > 0

    wrong = ClientSecretCredential(
        TENANT,
        CLIENT_ID,
        "not-the-secret",
        authority=f"{sim['tls_url']}/azure",
        disable_instance_discovery=True,
    )
    with pytest.raises(ClientAuthenticationError) as raised:
        wrong.get_token(ARM_SCOPE)
    assert "AADSTS7000215" in str(raised.value)


def test_azure_mgmt_creates_waits_gets_lists_and_deletes_servers(sim, azure):
    """azure-mgmt-resource/-network/-compute: a resource group and virtual network, then per
    server a public IP, NIC and VM through begin_create_or_update(...).result(), the VM with
    its instance view (running), VMs listed over several pages and found by tag through the
    generic resource list, then begin_delete(...).result() takes NIC and IP with the VM."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient
    from azure.mgmt.resource import ResourceManagementClient

    credential, options = azure
    resources = ResourceManagementClient(credential, SUBSCRIPTION, **options)
    network = NetworkManagementClient(credential, SUBSCRIPTION, **options)
    compute = ComputeManagementClient(credential, SUBSCRIPTION, **options)

    group = resources.resource_groups.create_or_update(GROUP, {"location": LOCATION})
    assert group.name == GROUP and group.properties.provisioning_state == "Succeeded"
    vnet = network.virtual_networks.begin_create_or_update(
        GROUP,
        "sdk-vnet",
        {
            "location": LOCATION,
            "address_space": {"address_prefixes": ["10.0.0.0/16"]},
            "subnets": [{"name": "default", "address_prefix": "10.0.0.0/24"}],
        },
    ).result()
    assert vnet.provisioning_state == "Succeeded"
    subnet = network.subnets.get(GROUP, "sdk-vnet", "default")

    names = ["sdk-az-1", "sdk-az-2", "sdk-az-3"]
    tags = {name: {"suite": "sdk", "provisioner-idempotency-key": f"key-{name}"} for name in names}
    ip_pollers = {
        name: network.public_ip_addresses.begin_create_or_update(
            GROUP,
            f"{name}-ip",
            {
                "location": LOCATION,
                "sku": {"name": "Standard"},
                "public_ip_allocation_method": "Static",
                "tags": tags[name],
            },
        )
        for name in names
    }
    ips = {name: poller.result() for name, poller in ip_pollers.items()}
    assert all(ip.provisioning_state == "Succeeded" for ip in ips.values())
    assert all(ip.ip_address.startswith("198.51.100.") for ip in ips.values())

    nic_pollers = {
        name: network.network_interfaces.begin_create_or_update(
            GROUP,
            f"{name}-nic",
            {
                "location": LOCATION,
                "tags": tags[name],
                "ip_configurations": [
                    {
                        "name": "ipconfig1",
                        "subnet": {"id": subnet.id},
                        "public_ip_address": {"id": ips[name].id, "delete_option": "Delete"},
                    }
                ],
            },
        )
        for name in names
    }
    nics = {name: poller.result() for name, poller in nic_pollers.items()}
    assert nics[names[0]].ip_configurations[0].public_ip_address.id == ips[names[0]].id

    def vm(name):
        return {
            "location": LOCATION,
            "tags": tags[name],
            "hardware_profile": {"vm_size": "Standard_B2s"},
            "storage_profile": {
                "image_reference": {
                    "publisher": "Canonical",
                    "offer": "ubuntu-24_04-lts",
                    "sku": "server",
                    "version": "latest",
                },
                "os_disk": {
                    "create_option": "FromImage",
                    "delete_option": "Delete",
                    "managed_disk": {"storage_account_type": "StandardSSD_LRS"},
                },
            },
            "os_profile": {
                "computer_name": name,
                "admin_username": "azureuser",
                "custom_data": base64.b64encode(USER_DATA.encode()).decode(),
                "linux_configuration": linux_signed_in_by_key(),
            },
            "network_profile": {
                "network_interfaces": [
                    {"id": nics[name].id, "primary": True, "delete_option": "Delete"}
                ]
            },
        }

    first = compute.virtual_machines.begin_create_or_update(GROUP, names[0], vm(names[0]))
    assert not first.done()
    created = first.result()
    assert created.provisioning_state == "Succeeded"
    # The same PUT again updates the same VM: nothing new is made.
    again = compute.virtual_machines.begin_create_or_update(GROUP, names[0], vm(names[0])).result()
    assert again.vm_id == created.vm_id
    pollers = [
        compute.virtual_machines.begin_create_or_update(GROUP, name, vm(name)) for name in names[1:]
    ]
    for poller in pollers:
        assert poller.result().provisioning_state == "Succeeded"

    got = compute.virtual_machines.get(GROUP, names[0], expand="instanceView")
    assert got.hardware_profile.vm_size == "Standard_B2s"
    assert got.tags["provisioner-idempotency-key"] == f"key-{names[0]}"
    codes = [status.code for status in got.instance_view.statuses]
    assert codes == ["ProvisioningState/succeeded", "PowerState/running"]
    view = compute.virtual_machines.instance_view(GROUP, names[0])
    assert "PowerState/running" in [status.code for status in view.statuses]
    attached = network.network_interfaces.get(GROUP, f"{names[0]}-nic")
    assert attached.virtual_machine.id == got.id
    server = sim_server(sim, "azure", names[0])
    assert server["ssh_keys"] == [PUBLIC_KEY]
    assert server["user_data"] == USER_DATA
    stats = sim_get(sim, "/_sim/stats")["vendors"]["azure"]
    assert stats["created_total"] == 3 and stats["duplicates"] == {}

    assert sim_post(sim, "/_sim/paging", {"max_per_page": 1}) == 204
    try:
        pages = [list(page) for page in compute.virtual_machines.list_all().by_page()]
        in_group = [vm.name for vm in compute.virtual_machines.list(GROUP)]
    finally:
        sim_post(sim, "/_sim/paging", {"max_per_page": None})
    assert len(pages) == 3
    assert sorted(vm.name for page in pages for vm in page) == names
    assert sorted(in_group) == names
    tagged = list(
        resources.resources.list(
            filter=f"tagName eq 'provisioner-idempotency-key' and tagValue eq 'key-{names[1]}'"
        )
    )
    assert sorted(r.type for r in tagged) == [
        "Microsoft.Compute/virtualMachines",
        "Microsoft.Network/networkInterfaces",
        "Microsoft.Network/publicIPAddresses",
    ]

    # ARM refuses to delete an IP a NIC holds, as Azure does.
    with pytest.raises(HttpResponseError) as refused:
        network.public_ip_addresses.begin_delete(GROUP, f"{names[0]}-ip").result()
    assert refused.value.error.code == "PublicIPAddressCannotBeDeleted"

    deletions = [compute.virtual_machines.begin_delete(GROUP, name) for name in names]
    for poller in deletions:
        poller.result()
    for name in names:
        with pytest.raises(ResourceNotFoundError) as missing:
            compute.virtual_machines.get(GROUP, name)
        assert missing.value.error.code == "ResourceNotFound"
        with pytest.raises(ResourceNotFoundError):
            network.network_interfaces.get(GROUP, f"{name}-nic")
        with pytest.raises(ResourceNotFoundError):
            network.public_ip_addresses.get(GROUP, f"{name}-ip")
    counts = sim_get(sim, "/_sim/azure/resources")["counts"]
    assert counts["Microsoft.Network/publicIPAddresses"] == 0
    assert counts["Microsoft.Network/networkInterfaces"] == 0
    assert counts["Microsoft.Compute/disks"] == 0
    assert counts["Microsoft.Compute/virtualMachines"] == 0
    assert sim_get(sim, "/_sim/stats")["vendors"]["azure"]["live"] == 0


def test_azure_mgmt_sees_an_allocation_failure_through_its_poller(sim, azure):
    """An AllocationFailed operation fails the SDK's poller with ARM's error code; the failed
    VM is there (provisioningState Failed) until deleted, as at Azure."""
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient
    from azure.mgmt.resource import ResourceManagementClient

    credential, options = azure
    ResourceManagementClient(credential, SUBSCRIPTION, **options).resource_groups.create_or_update(
        "sdk-fault-rg", {"location": LOCATION}
    )
    network = NetworkManagementClient(credential, SUBSCRIPTION, **options)
    compute = ComputeManagementClient(credential, SUBSCRIPTION, **options)
    vnet = network.virtual_networks.begin_create_or_update(
        "sdk-fault-rg",
        "vnet",
        {
            "location": LOCATION,
            "address_space": {"address_prefixes": ["10.0.0.0/16"]},
            "subnets": [{"name": "default", "address_prefix": "10.0.0.0/24"}],
        },
    ).result()
    nic = network.network_interfaces.begin_create_or_update(
        "sdk-fault-rg",
        "fault-nic",
        {
            "location": LOCATION,
            "ip_configurations": [{"name": "ipconfig1", "subnet": {"id": vnet.subnets[0].id}}],
        },
    ).result()
    assert sim_post(sim, "/_sim/azure/faults", {"kind": "allocation_failed"}) == 201
    poller = compute.virtual_machines.begin_create_or_update(
        "sdk-fault-rg",
        "fault-vm",
        {
            "location": LOCATION,
            "hardware_profile": {"vm_size": "Standard_B1s"},
            "storage_profile": {
                "image_reference": {
                    "publisher": "Debian",
                    "offer": "debian-12",
                    "sku": "12-gen2",
                    "version": "latest",
                },
                "os_disk": {"create_option": "FromImage", "delete_option": "Delete"},
            },
            "os_profile": {
                "computer_name": "fault-vm",
                "admin_username": "azureuser",
                "linux_configuration": linux_signed_in_by_key(),
            },
            "network_profile": {
                "network_interfaces": [{"id": nic.id, "delete_option": "Delete"}]
            },
        },
    )
    with pytest.raises(HttpResponseError) as failed:
        poller.result()
    assert "AllocationFailed" in str(failed.value)
    assert compute.virtual_machines.get("sdk-fault-rg", "fault-vm").provisioning_state == "Failed"
    compute.virtual_machines.begin_delete("sdk-fault-rg", "fault-vm").result()
    assert sim_get(sim, "/_sim/azure/resources")["counts"]["Microsoft.Network/networkInterfaces"] == 0
