//! Azure Resource Manager and the Microsoft identity platform's token endpoint, over HTTP
//! against the simulator's server loop: a registered app's client credentials buy a bearer
//! token (and nothing else does); public IPs, NICs and VMs are made by `PUT`, idempotent by
//! name, through long-running operations followed by `Azure-AsyncOperation`; deleting a VM
//! takes its disk, NIC and IP with it only when they are set to go; in-use resources cannot
//! be deleted; lists page through `nextLink` and filter by tag; faults come in ARM's shapes.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

const BOOT_DELAY: Duration = Duration::from_millis(400);
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "sim~secret.value";
const SUB: &str = "6f1a9c2e-0000-4000-8000-000000000001";
const RG: &str = "provisioner-rg";
const LOCATION: &str = "westeurope";
const API: &str = "api-version=2024-07-01";
const NET_API: &str = "api-version=2024-05-01";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM1MQrOGZkyTYSLN/FGDhozOMWieTtIaVBkR5a83m5IW sdk@test";

struct Sim {
    addr: SocketAddr,
    http: reqwest::Client,
    token: String,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// The answer is ARM's error `code` with this status.
fn assert_refused(answer: &Answer, status: u16, code: &str) {
    assert_eq!(
        (answer.status, answer.code()),
        (status, code),
        "{}",
        answer.body
    );
}

impl Sim {
    /// A fresh simulator with the test app (its resource group, virtual network and subnet)
    /// registered, and a token for it.
    async fn start() -> Sim {
        let addr = common::start_sim(BOOT_DELAY).await;
        let mut sim = Sim {
            addr,
            http: reqwest::Client::new(),
            token: String::new(),
        };
        sim.register(CLIENT_ID, SUB, None).await;
        let (status, body) = sim
            .grant(CLIENT_ID, SECRET, "https://management.azure.com/.default")
            .await;
        assert_eq!(status, 200, "{body}");
        sim.token = body["access_token"].as_str().unwrap().to_string();
        sim
    }

    async fn register(&self, client_id: &str, subscription: &str, ttl: Option<u64>) {
        let body = json!({
            "tenant_id": TENANT, "client_id": client_id, "client_secret": SECRET,
            "subscription_id": subscription, "resource_group": RG, "location": LOCATION,
            "virtual_network": "provisioner-vnet", "subnet": "default",
        });
        common::register_credential(&self.http, self.url("/_sim/azure/apps"), body, ttl).await;
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("http://{}{path}", self.addr)
        }
    }

    async fn grant(&self, client_id: &str, secret: &str, scope: &str) -> (u16, Value) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", client_id)
            .append_pair("client_secret", secret)
            .append_pair("scope", scope)
            .finish();
        let url = self.url(&format!("/azure/{TENANT}/oauth2/v2.0/token"));
        common::post_form(&self.http, url, body).await
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        let text = answer.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call_as(Some(&self.token), method, path, body).await
    }

    async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }

    async fn sim_get(&self, path: &str) -> Value {
        common::get_json(&self.http, self.url(path)).await
    }

    async fn sim_post(&self, path: &str, body: Value) -> u16 {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Polls an `Azure-AsyncOperation` URL until the operation ends; its last status body.
    async fn wait(&self, operation: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self.get(operation).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            if answer.body["status"] != "InProgress" {
                return answer.body;
            }
            assert!(Instant::now() < deadline, "operation never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// PUTs and waits for the operation to succeed; the final GET.
    async fn put_and_wait(&self, path: &str, body: Value) -> Value {
        let answer = self.put(path, body).await;
        assert!(
            answer.status == 201 || answer.status == 200,
            "{}",
            answer.body
        );
        let operation = answer
            .header("azure-asyncoperation")
            .expect("no Azure-AsyncOperation");
        let done = self.wait(&operation).await;
        assert_eq!(done["status"], "Succeeded", "{done}");
        let got = self.get(path).await;
        assert_eq!(got.status, 200);
        got.body
    }

    async fn delete_and_wait(&self, path: &str) {
        let answer = self.delete(path).await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        assert!(answer.header("location").is_some());
        let operation = answer.header("azure-asyncoperation").unwrap();
        assert_eq!(self.wait(&operation).await["status"], "Succeeded");
    }

    async fn census(&self) -> Value {
        self.sim_get("/_sim/azure/resources").await["counts"].clone()
    }
}

fn rg_path(kind: &str, name: &str) -> String {
    let api = if kind.starts_with("Microsoft.Network") {
        NET_API
    } else {
        API
    };
    format!("/azure/subscriptions/{SUB}/resourceGroups/{RG}/providers/{kind}/{name}?{api}")
}

fn ip_path(name: &str) -> String {
    rg_path("Microsoft.Network/publicIPAddresses", name)
}

fn nic_path(name: &str) -> String {
    rg_path("Microsoft.Network/networkInterfaces", name)
}

fn vm_path(name: &str) -> String {
    rg_path("Microsoft.Compute/virtualMachines", name)
}

fn id_of(path: &str) -> String {
    path.trim_start_matches("/azure")
        .split('?')
        .next()
        .unwrap()
        .to_string()
}

fn ip_body(key: &str) -> Value {
    json!({"location": LOCATION, "sku": {"name": "Standard"},
           "tags": {"provisioner-idempotency-key": key},
           "properties": {"publicIPAllocationMethod": "Static"}})
}

fn nic_body(ip: &str, key: &str, ip_goes: bool) -> Value {
    let subnet = format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/provisioner-vnet/subnets/default"
    );
    let mut public = json!({"id": id_of(&ip_path(ip))});
    if ip_goes {
        public["properties"] = json!({"deleteOption": "Delete"});
    }
    json!({"location": LOCATION, "tags": {"provisioner-idempotency-key": key},
           "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {
               "subnet": {"id": subnet}, "publicIPAddress": public}}]}})
}

fn vm_body(nic: &str, key: &str, goes: bool) -> Value {
    let option = if goes { "Delete" } else { "Detach" };
    json!({
        "location": LOCATION,
        "tags": {"provisioner-idempotency-key": key, "suite": "rust"},
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_B2s"},
            "storageProfile": {
                "imageReference": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts",
                                   "sku": "server", "version": "latest"},
                "osDisk": {"createOption": "FromImage", "deleteOption": option,
                           "managedDisk": {"storageAccountType": "StandardSSD_LRS"}},
            },
            "osProfile": {
                "computerName": "web", "adminUsername": "azureuser",
                "customData": "I2Nsb3VkLWNvbmZpZwo=",
                "linuxConfiguration": {"disablePasswordAuthentication": true,
                    "ssh": {"publicKeys": [{"path": "/home/azureuser/.ssh/authorized_keys", "keyData": KEY}]}},
            },
            "networkProfile": {"networkInterfaces": [
                {"id": id_of(&nic_path(nic)), "properties": {"deleteOption": option, "primary": true}}]},
        },
    })
}

/// The public IP, NIC and VM of one server, made and waited for.
async fn make_server(sim: &Sim, name: &str, goes: bool) -> Value {
    let key = format!("key-{name}");
    sim.put_and_wait(&ip_path(&format!("{name}-ip")), ip_body(&key))
        .await;
    sim.put_and_wait(
        &nic_path(&format!("{name}-nic")),
        nic_body(&format!("{name}-ip"), &key, goes),
    )
    .await;
    sim.put_and_wait(&vm_path(name), vm_body(&format!("{name}-nic"), &key, goes))
        .await
}

#[tokio::test]
async fn the_token_endpoint_grants_registered_apps_only() {
    let sim = Sim::start().await;
    let config = sim
        .sim_get(&format!(
            "/azure/{TENANT}/v2.0/.well-known/openid-configuration"
        ))
        .await;
    assert_eq!(
        config["token_endpoint"],
        format!("http://{}/azure/{TENANT}/oauth2/v2.0/token", sim.addr)
    );
    assert!(config["authorization_endpoint"].is_string() && config["issuer"].is_string());
    let unknown_tenant = sim
        .http
        .get(sim.url(
            "/azure/00000000-1111-2222-3333-444444444444/v2.0/.well-known/openid-configuration",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_tenant.status(), 400);

    let (status, body) = sim
        .grant(CLIENT_ID, SECRET, "https://management.azure.com/.default")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert_eq!(body["access_token"].as_str().unwrap().split('.').count(), 3);

    let (status, body) = sim
        .grant(CLIENT_ID, "wrong", "https://management.azure.com/.default")
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"], json!([7000215]));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: ")
    );
    assert!(body["trace_id"].is_string() && body["correlation_id"].is_string());

    for (client_id, scope, error) in [
        (
            "nobody",
            "https://management.azure.com/.default",
            "unauthorized_client",
        ),
        (CLIENT_ID, "https://management.azure.com/", "invalid_scope"),
    ] {
        let (status, body) = sim.grant(client_id, SECRET, scope).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(error)),
            "{client_id} {scope}"
        );
    }
    let (status, body) = sim
        .grant(CLIENT_ID, SECRET, "https://graph.microsoft.com/.default")
        .await;
    assert_eq!(status, 400, "{body}");

    // ARM: no token, a made-up token, an expired one, another subscription, no api-version.
    let list =
        format!("/azure/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?{API}");
    let none = sim.call_as(None, Method::GET, &list, None).await;
    assert_refused(&none, 401, "AuthenticationFailed");
    assert!(
        none.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer ")
    );
    let made_up = sim
        .call_as(Some("eyJ.made.up"), Method::GET, &list, None)
        .await;
    assert_refused(&made_up, 401, "InvalidAuthenticationToken");

    sim.register(
        "short-lived",
        "6f1a9c2e-0000-4000-8000-000000000002",
        Some(1),
    )
    .await;
    let (_, body) = sim
        .grant(
            "short-lived",
            SECRET,
            "https://management.azure.com/.default",
        )
        .await;
    let short = body["access_token"].as_str().unwrap().to_string();
    let other = format!(
        "/azure/subscriptions/6f1a9c2e-0000-4000-8000-000000000002/providers/Microsoft.Compute/virtualMachines?{API}"
    );
    assert_eq!(
        sim.call_as(Some(&short), Method::GET, &other, None)
            .await
            .status,
        200
    );
    let forbidden = sim.call_as(Some(&short), Method::GET, &list, None).await;
    assert_refused(&forbidden, 403, "AuthorizationFailed");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = sim.call_as(Some(&short), Method::GET, &other, None).await;
    assert_refused(&expired, 401, "ExpiredAuthenticationToken");

    let unknown = sim
        .get(&format!(
            "/azure/subscriptions/{}/resources?{API}",
            "00000000-0000-0000-0000-00000000abcd"
        ))
        .await;
    assert_refused(&unknown, 404, "SubscriptionNotFound");
    let no_version = sim.get(&list.replace(&format!("?{API}"), "")).await;
    assert_refused(&no_version, 400, "MissingApiVersionParameter");
}

#[tokio::test]
async fn puts_are_long_running_and_idempotent_by_name() {
    let sim = Sim::start().await;
    let ip = sim.put(&ip_path("web-ip"), ip_body("k1")).await;
    assert_eq!(ip.status, 201, "{}", ip.body);
    assert_eq!(ip.body["properties"]["provisioningState"], "Updating");
    assert!(ip.header("retry-after").is_some());
    let operation = ip.header("azure-asyncoperation").unwrap();
    assert!(operation.contains("/providers/Microsoft.Network/locations/westeurope/operations/"));
    assert_eq!(sim.wait(&operation).await["status"], "Succeeded");
    let ip = sim.get(&ip_path("web-ip")).await.body;
    assert_eq!(ip["properties"]["provisioningState"], "Succeeded");
    assert!(
        ip["properties"]["ipAddress"]
            .as_str()
            .unwrap()
            .starts_with("198.51.100.")
    );
    sim.put_and_wait(&nic_path("web-nic"), nic_body("web-ip", "k1", true))
        .await;

    let created = sim
        .put(&vm_path("web"), vm_body("web-nic", "k1", true))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["properties"]["provisioningState"], "Creating");
    let operation = created.header("azure-asyncoperation").unwrap();
    assert!(operation.contains("/providers/Microsoft.Compute/locations/westeurope/operations/"));
    let first = sim.get(&operation).await;
    assert_eq!(first.body["status"], "InProgress");
    let view = sim
        .get(&vm_path("web").replace("?", "/instanceView?"))
        .await;
    assert_eq!(view.body["statuses"][1]["code"], "PowerState/starting");
    assert_eq!(sim.wait(&operation).await["status"], "Succeeded");

    let vm = sim
        .get(&format!("{}&$expand=instanceView", vm_path("web")))
        .await
        .body;
    assert_eq!(vm["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        vm["properties"]["hardwareProfile"]["vmSize"],
        "Standard_B2s"
    );
    assert_eq!(vm["tags"]["provisioner-idempotency-key"], "k1");
    let statuses: Vec<&str> = vm["properties"]["instanceView"]["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["ProvisioningState/succeeded", "PowerState/running"]
    );
    assert!(
        vm["properties"]
            .get("osProfile")
            .unwrap()
            .get("customData")
            .is_none()
    );
    let nic = sim.get(&nic_path("web-nic")).await.body;
    assert_eq!(nic["properties"]["virtualMachine"]["id"], vm["id"]);
    // The first PUT's tags are the server's labels and key already (not only an update's).
    let servers = sim.sim_get("/_sim/servers").await;
    let first = common::server_of(&servers, "azure");
    assert_eq!(first["idempotency_key"], "k1", "{first}");
    assert_eq!(first["labels"]["suite"], "rust", "{first}");

    // The same PUT again: an update of the same VM, nothing new made.
    let mut again_body = vm_body("web-nic", "k1", true);
    again_body["tags"]["extra"] = json!("yes");
    let again = sim.put(&vm_path("WEB"), again_body).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["properties"]["provisioningState"], "Updating");
    assert_eq!(again.body["id"], vm["id"]);
    sim.wait(&again.header("azure-asyncoperation").unwrap())
        .await;
    let ip_again = sim.put(&ip_path("web-ip"), ip_body("k1")).await;
    assert_eq!(ip_again.status, 200);
    let stats = sim.sim_get("/_sim/stats").await;
    assert_eq!(stats["vendors"]["azure"]["created_total"], 1);
    assert_eq!(stats["vendors"]["azure"]["live"], 1);
    assert_eq!(stats["vendors"]["azure"]["duplicates"], json!({}));
    let servers = sim.sim_get("/_sim/servers").await;
    let server = common::server_of(&servers, "azure");
    assert_eq!(server["idempotency_key"], "k1");
    assert_eq!(server["labels"]["extra"], "yes");
    assert_eq!(server["ssh_keys"], json!([KEY]));
    assert_eq!(server["user_data"], "#cloud-config\n");
    let counts = sim.census().await;
    assert_eq!(counts["Microsoft.Network/publicIPAddresses"], 1);
    assert_eq!(counts["Microsoft.Network/networkInterfaces"], 1);
    assert_eq!(counts["Microsoft.Compute/virtualMachines"], 1);
    assert_eq!(counts["Microsoft.Compute/disks"], 1);

    // Another location for the same name is refused; an image change too.
    let mut moved = vm_body("web-nic", "k1", true);
    moved["location"] = json!("eastus");
    let moved = sim.put(&vm_path("web"), moved).await;
    assert_refused(&moved, 400, "InvalidResourceLocation");
    let mut reimaged = vm_body("web-nic", "k1", true);
    reimaged["properties"]["storageProfile"]["imageReference"] =
        json!({"publisher": "Debian", "offer": "debian-12", "sku": "12-gen2", "version": "latest"});
    let reimaged = sim.put(&vm_path("web"), reimaged).await;
    assert_refused(&reimaged, 409, "PropertyChangeNotAllowed");
}

#[tokio::test]
async fn deleting_a_vm_takes_what_is_set_to_go_and_leaves_the_rest() {
    let sim = Sim::start().await;
    make_server(&sim, "goes", true).await;
    make_server(&sim, "stays", false).await;
    let counts = sim.census().await;
    assert_eq!(counts["Microsoft.Network/publicIPAddresses"], 2);

    let answer = sim.delete(&vm_path("goes")).await;
    assert_eq!(answer.status, 202);
    assert!(
        answer
            .header("location")
            .unwrap()
            .contains("/operationResults/")
    );
    let deleting = sim.get(&vm_path("goes")).await;
    assert_eq!(deleting.body["properties"]["provisioningState"], "Deleting");
    let location = answer.header("location").unwrap();
    assert_eq!(sim.get(&location).await.status, 202);
    assert_eq!(
        sim.wait(&answer.header("azure-asyncoperation").unwrap())
            .await["status"],
        "Succeeded"
    );
    assert_eq!(sim.get(&location).await.status, 204);
    let gone = sim.get(&vm_path("goes")).await;
    assert_refused(&gone, 404, "ResourceNotFound");
    for path in [nic_path("goes-nic"), ip_path("goes-ip")] {
        assert_eq!(sim.get(&path).await.status, 404, "{path}");
    }
    let counts = sim.census().await;
    assert_eq!(counts["Microsoft.Network/publicIPAddresses"], 1);
    assert_eq!(counts["Microsoft.Network/networkInterfaces"], 1);
    assert_eq!(counts["Microsoft.Compute/disks"], 1);

    // Without delete options the disk, NIC and IP stay behind, detached: a leak.
    sim.delete_and_wait(&vm_path("stays")).await;
    let counts = sim.census().await;
    assert_eq!(counts["Microsoft.Compute/virtualMachines"], 0);
    assert_eq!(counts["Microsoft.Network/publicIPAddresses"], 1);
    assert_eq!(counts["Microsoft.Network/networkInterfaces"], 1);
    assert_eq!(counts["Microsoft.Compute/disks"], 1);
    let nic = sim.get(&nic_path("stays-nic")).await.body;
    assert!(nic["properties"].get("virtualMachine").is_none());
    let vm_list = sim
        .get(&format!(
            "/azure/subscriptions/{SUB}/providers/Microsoft.Compute/disks?{API}"
        ))
        .await;
    assert_eq!(
        vm_list.body["value"][0]["properties"]["diskState"],
        "Unattached"
    );
    assert_eq!(
        sim.sim_get("/_sim/stats").await["vendors"]["azure"]["live"],
        0
    );

    // Now they can go, NIC first, then the IP it held, then the disk.
    sim.delete_and_wait(&nic_path("stays-nic")).await;
    sim.delete_and_wait(&ip_path("stays-ip")).await;
    let disk = vm_list.body["value"][0]["id"].as_str().unwrap().to_string();
    sim.delete_and_wait(&format!("/azure{disk}?{API}")).await;
    let counts = sim.census().await;
    assert!(
        counts
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "Microsoft.Network/virtualNetworks")
            .all(|(_, v)| v == 0),
        "{counts}"
    );
    // Deleting what is not there is a 204.
    assert_eq!(sim.delete(&vm_path("goes")).await.status, 204);
}

#[tokio::test]
async fn resources_in_use_cannot_be_deleted_or_taken() {
    let sim = Sim::start().await;
    make_server(&sim, "web", false).await;
    let ip = sim.delete(&ip_path("web-ip")).await;
    assert_refused(&ip, 400, "PublicIPAddressCannotBeDeleted");
    let nic = sim.delete(&nic_path("web-nic")).await;
    assert_refused(&nic, 400, "NicInUse");
    let second_nic = sim
        .put(&nic_path("other-nic"), nic_body("web-ip", "k2", false))
        .await;
    assert_refused(&second_nic, 400, "PublicIPAddressInUse");
    let second_vm = sim
        .put(&vm_path("other"), vm_body("web-nic", "k2", false))
        .await;
    assert_refused(&second_vm, 400, "NicInUse");

    // References to what does not exist, and other refusals.
    let dangling = sim
        .put(&nic_path("dangling"), nic_body("no-such-ip", "k3", false))
        .await;
    assert_refused(&dangling, 400, "InvalidResourceReference");
    let mut bad_image = vm_body("web-nic", "k3", false);
    bad_image["properties"]["storageProfile"]["imageReference"]["offer"] = json!("nope");
    let bad_image = sim.put(&vm_path("img"), bad_image).await;
    assert_refused(&bad_image, 404, "PlatformImageNotFound");
    let mut bad_size = vm_body("web-nic", "k3", false);
    bad_size["properties"]["hardwareProfile"]["vmSize"] = json!("Huge");
    let bad_size = sim.put(&vm_path("size"), bad_size).await;
    assert_refused(&bad_size, 400, "InvalidParameter");
    let mut no_location = ip_body("k3");
    no_location.as_object_mut().unwrap().remove("location");
    let no_location = sim.put(&ip_path("x"), no_location).await;
    assert_refused(&no_location, 400, "LocationRequired");
    let no_group = sim.get(&vm_path("web").replace(RG, "missing-rg")).await;
    assert_refused(&no_group, 404, "ResourceGroupNotFound");
    let missing = sim.get(&vm_path("missing")).await;
    assert_refused(&missing, 404, "ResourceNotFound");
}

#[tokio::test]
async fn lists_page_through_next_links_and_filter_by_tag() {
    let sim = Sim::start().await;
    for n in 0..5 {
        let status = sim
            .sim_post("/_sim/servers", json!({"vendor": "azure", "name": format!("seed-{n}"), "idempotency_key": format!("k{n}")}))
            .await;
        assert_eq!(status, 201);
    }
    assert_eq!(
        sim.sim_post("/_sim/paging", json!({"max_per_page": 2}))
            .await,
        204
    );
    let mut url =
        format!("/azure/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?{API}");
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let page = sim.get(&url).await;
        assert_eq!(page.status, 200, "{}", page.body);
        pages += 1;
        for vm in page.body["value"].as_array().unwrap() {
            names.push(vm["name"].as_str().unwrap().to_string());
        }
        match page.body["nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&format!("http://{}/azure/subscriptions/", sim.addr)));
                assert!(next.contains("api-version=2024-07-01"));
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["seed-0", "seed-1", "seed-2", "seed-3", "seed-4"]);
    let in_group = sim
        .get(&format!("/azure/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines?{API}"))
        .await;
    assert_eq!(in_group.body["value"].as_array().unwrap().len(), 2);
    assert!(in_group.body["nextLink"].is_string());
    sim.sim_post("/_sim/paging", json!({"max_per_page": null}))
        .await;

    // A seeded VM runs, with its NIC and IP.
    tokio::time::sleep(BOOT_DELAY).await;
    let view = sim
        .get(&vm_path("seed-2").replace("?", "/instanceView?"))
        .await;
    assert_eq!(view.body["statuses"][1]["code"], "PowerState/running");

    let by_tag = sim
        .get(&format!("/azure/subscriptions/{SUB}/resources?$filter=tagName eq 'provisioner-idempotency-key' and tagValue eq 'k2'&{API}"))
        .await;
    assert_eq!(by_tag.status, 200, "{}", by_tag.body);
    let mut types: Vec<&str> = by_tag.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "Microsoft.Compute/virtualMachines",
            "Microsoft.Network/networkInterfaces",
            "Microsoft.Network/publicIPAddresses"
        ]
    );
    assert!(by_tag.body["value"][0].get("tags").is_none());
    let vms = sim
        .get(&format!("/azure/subscriptions/{SUB}/resources?$filter=resourceType eq 'Microsoft.Compute/virtualMachines'&$top=10&{API}"))
        .await;
    assert_eq!(vms.body["value"].as_array().unwrap().len(), 5);
    assert_eq!(
        vms.body["value"][0]["tags"]["provisioner-idempotency-key"],
        "k0"
    );
    let mixed = sim
        .get(&format!("/azure/subscriptions/{SUB}/resources?$filter=tagName eq 'a' and resourceType eq 'b'&{API}"))
        .await;
    assert_refused(&mixed, 400, "InvalidFilterInQueryString");

    // Deleting a seeded VM leaves nothing of it.
    sim.delete_and_wait(&vm_path("seed-2")).await;
    let left = sim.sim_get("/_sim/azure/resources").await;
    assert!(
        !left["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"].as_str().unwrap().starts_with("seed-2")
                && r["type"] != "Microsoft.Network/virtualNetworks"),
        "{left}"
    );
}

#[tokio::test]
async fn faults_come_in_arms_shapes() {
    let sim = Sim::start().await;
    let list =
        format!("/azure/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?{API}");
    sim.sim_post(
        "/_sim/faults",
        json!({"vendor": "azure", "kind": "rate_limit", "retry_after_secs": 3}),
    )
    .await;
    let limited = sim.get(&list).await;
    assert_refused(&limited, 429, "TooManyRequests");
    assert_eq!(limited.header("retry-after").as_deref(), Some("3"));
    sim.sim_post(
        "/_sim/faults",
        json!({"vendor": "azure", "kind": "server_error", "status": 503}),
    )
    .await;
    let unavailable = sim.get(&list).await;
    assert_refused(&unavailable, 503, "ServiceUnavailable");
    sim.sim_post(
        "/_sim/faults",
        json!({"vendor": "azure", "kind": "unauthorized"}),
    )
    .await;
    let refused = sim.get(&list).await;
    assert_refused(&refused, 401, "InvalidAuthenticationToken");
    assert_eq!(sim.get(&list).await.status, 200);

    sim.put_and_wait(&ip_path("f-ip"), ip_body("kf")).await;
    sim.put_and_wait(&nic_path("f-nic"), nic_body("f-ip", "kf", true))
        .await;
    assert_eq!(
        sim.sim_post("/_sim/azure/faults", json!({"kind": "quota_exceeded"}))
            .await,
        201
    );
    let quota = sim.put(&vm_path("f"), vm_body("f-nic", "kf", true)).await;
    assert_refused(&quota, 409, "OperationNotAllowed");
    assert!(
        quota.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Total Regional Cores quota")
    );
    sim.sim_post("/_sim/azure/faults", json!({"kind": "sku_not_available"}))
        .await;
    let sku = sim.put(&vm_path("f"), vm_body("f-nic", "kf", true)).await;
    assert_refused(&sku, 409, "SkuNotAvailable");
    assert_eq!(
        sim.sim_get("/_sim/stats").await["vendors"]["azure"]["created_total"],
        0
    );

    sim.sim_post("/_sim/azure/faults", json!({"kind": "allocation_failed"}))
        .await;
    let failing = sim.put(&vm_path("f"), vm_body("f-nic", "kf", true)).await;
    assert_eq!(failing.status, 201);
    let ended = sim
        .wait(&failing.header("azure-asyncoperation").unwrap())
        .await;
    assert_eq!(ended["status"], "Failed");
    assert_eq!(ended["error"]["code"], "AllocationFailed");
    let vm = sim
        .get(&format!("{}&$expand=instanceView", vm_path("f")))
        .await;
    assert_eq!(vm.body["properties"]["provisioningState"], "Failed");
    assert_eq!(
        vm.body["properties"]["instanceView"]["statuses"][0]["code"],
        "ProvisioningState/failed/AllocationFailed"
    );
    assert_eq!(sim.sim_get("/_sim/azure/faults").await["faults"], json!([]));
    // The failed VM is there until deleted, as at Azure; deleting it takes its parts.
    sim.delete_and_wait(&vm_path("f")).await;
    let counts = sim.census().await;
    assert_eq!(counts["Microsoft.Network/publicIPAddresses"], 0);
}
