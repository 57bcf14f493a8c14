//! Compute Engine and Google's OAuth token endpoint, over HTTP against the simulator's
//! server loop: a registered service account's RS256 JWT buys an access token (and nothing
//! else does); instances are made through operations that run until the boot delay has
//! passed, deduplicated by `requestId`, unique by name per zone, found by label filters over
//! every page of `aggregated/instances`, and deleted through operations; failures come in
//! Google's error shapes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};

const BOOT_DELAY: Duration = Duration::from_millis(600);
const EMAIL: &str = "provisioner@sim-project.iam.gserviceaccount.com";
const PROJECT: &str = "sim-project";
const ZONE: &str = "us-central1-a";
const COMPUTE_SCOPE: &str = "https://www.googleapis.com/auth/compute";

/// A throwaway RSA key made for these tests only; it is registered with the simulator the
/// tests start and grants nothing anywhere else.
const TEST_KEY: &str = r"-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQC3bNgrUmN23e0W
pyEJuIDU9XUHehws8Ct7rb6GRcDKQNzoaDuItQMP5hi7t84QrJ/ctjIi3pKrs6D/
9jDCLpm6dDsPykGjYS6VkqhOAxBl4lnOL8HQVYK6qS6GsIsMUvA/yzv4vaFw1Vzi
+6t984FOO0AeiGtevT+GfiLcbnrxG5v1ziTwcS7/c72N6ZVihetWM1Xmd3lqDxnf
sgLfhoNfRZFiwjHcE1jpU6Gr7xW1goveZLqrrO1QY6eu3h6MPjrj6TB6g74h3i5Y
J8MHLomjumzAdSYOObe8HKDbqOCO45R45ngE10qvufPicsg/nQkVrPLy7vtm1ayD
B1kMV5K7AgMBAAECggEAKmOnk19vaBWCiKUoD/CJKW3uVUOFhmccjXEKIkq1cqhJ
xRXtiDrY0dBJr/wazaSvLxkV/hP0zmRtVSnme8G8OihJS+1gfOrlEqD5b0nq/Liy
K2HDByvz0cJuY6ciAz+ZkQydN+9PA13zoOsrZyiinds4hrXdJmBS8XhuAwYvOE/V
4GOANZK2DQdJSc5Q0bLpypwnySrxSBsYwgMuKS0PuVtjlWOvuKpXEEqfDFVImd5C
Vjcai/Arh2YPCmUZ5q1RlHy5AZHiw0iXPa546/kfzxJfJr+n7fbNWHwkwE8ExWjF
Y+d6k/Rpes+a+QIfJvso6sWt/b8Pu7gundlNvtegpQKBgQDxKrU0a1xtW5n3W7y/
KxA4nPhAaewxZEpkKlOj4lbYSSqSUQ53aKBiu7dAj9dTZS7YkSTFhK1ACErEieIR
MTaZy7n/6qmNla76Yw3Aax1FaGxMjsyQwz+GxLS43oewOZ6LfZpAycEcubhn2ZIo
LBcEuPbZh7FyMzezyBvh2fMO1QKBgQDCtPckEmXE3UnxlW0U9ZGuRPDofGwA9EsF
YtEct0XYqneS0cnRe8F2X+KFFFiDsfNvnYNrnUFAYn9tuN0uzSUNc9wJc9rTiZ4e
PcVtYo4has6kSWBUW+1DkCFo0nIb8xtBRezm02OAiQ7lNiICvn04jOhjjAfexFBs
u6GMaEODTwKBgELKFyELUq+enMdaiq1O2dEz97SvIRCUu919s2hBuNdxe+7FsAH1
4eU2I4wnyfR4oz6rA8oH8os3QK2pmgg03vA88agkbwydFbaWVCqj/5lHUCbrrU+y
IxfJxlskleOCMZxkDqI+vdKcxKtOICIsA7v1Fbgs0kHUWWra0o379Ep5AoGBAL8u
LZTvs5mvpxFdJXR1A4xYCSxeLzZoqNkrBCTsF9r81tgEweO9XmK7F5KQPbFiI6Ou
yAH8sLtle7Xi1NtFd2JUJvPpHC6la+pJwPb81I4fb7OEkN+EO94hQYzJRl4HQPXA
kTK80XC+IzARDSggnpfOU8ibEIc9v7JkMeXJ4rClAoGBAKSrg1DyLIDDj6z9Nj3u
KH6S4A8QNI3CXr8MhwUgMFV9rTEUkMpN16of++9ITjTapgHfNrVkuQYZBkdt5CY0
SfZE8ySoE2W27REqDKCLs6i1/N4YOX4jISmpX1EareDqOFqfdbIw2FCzr22mAXk8
lo8Sh6kgC3diqA1Tehb0yEBg
-----END PRIVATE KEY-----";

struct Sim {
    addr: SocketAddr,
    http: reqwest::Client,
    key: RsaPrivateKey,
}

impl Sim {
    /// A fresh simulator with the test service account registered.
    async fn start() -> Sim {
        let addr = common::start_sim(BOOT_DELAY).await;
        let sim = Sim {
            addr,
            http: reqwest::Client::new(),
            key: RsaPrivateKey::from_pkcs8_pem(TEST_KEY).unwrap(),
        };
        sim.register(EMAIL, PROJECT, &sim.key, None).await;
        sim
    }

    async fn register(&self, email: &str, project: &str, key: &RsaPrivateKey, ttl: Option<u64>) {
        let public = RsaPublicKey::from(key)
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let body = json!({"client_email": email, "project_id": project, "public_key": public});
        let url = format!("http://{}/_sim/gcp/service-accounts", self.addr);
        common::register_credential(&self.http, url, body, ttl).await;
    }

    /// The JSON answer to `GET path` at the simulator's own endpoints.
    async fn sim_get(&self, path: &str) -> Value {
        common::get_json(&self.http, format!("http://{}{path}", self.addr)).await
    }

    fn compute(&self, path: &str) -> String {
        format!(
            "http://{}/gcp/compute/v1/projects/{PROJECT}{path}",
            self.addr
        )
    }

    /// POSTs a grant to the token endpoint.
    async fn grant(&self, grant_type: &str, assertion: &str) -> (u16, Value) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", grant_type)
            .append_pair("assertion", assertion)
            .finish();
        common::post_form(&self.http, format!("http://{}/gcp/token", self.addr), body).await
    }

    /// An access token for the test account.
    async fn token(&self) -> String {
        let jwt = sign(&self.key, &grant_claims(EMAIL));
        let (status, body) = self.grant(JWT_BEARER, &jwt).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Arms a fault through the simulator's control endpoint `path` (`/_sim/faults`,
    /// `/_sim/gcp/faults`); the answer's status.
    async fn arm(&self, path: &str, rule: Value) -> u16 {
        let answer = self
            .http
            .post(format!("http://{}{path}", self.addr))
            .json(&rule)
            .send()
            .await
            .unwrap();
        answer.status().as_u16()
    }

    /// Status and JSON body of a `GET` with the token.
    async fn get(&self, url: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, url, token, None).await
    }

    /// POSTs an instance's body to an insert URL.
    async fn insert(&self, url: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, url, token, Some(body))
            .await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap())
    }
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn grant_claims(email: &str) -> Value {
    json!({
        "iss": email, "aud": "https://oauth2.googleapis.com/token", "scope": COMPUTE_SCOPE,
        "iat": now(), "exp": now() + 3600,
    })
}

/// A compact RS256 JWS of `claims`.
fn sign(key: &RsaPrivateKey, claims: &Value) -> String {
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(key.clone());
    let signature = signer.sign(signed.as_bytes()).to_bytes();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn instance_body(name: &str, key: &str) -> Value {
    json!({
        "name": name,
        "machineType": format!("zones/{ZONE}/machineTypes/e2-small"),
        "disks": [{"boot": true, "autoDelete": true, "initializeParams": {
            "sourceImage": "projects/debian-cloud/global/images/family/debian-12"}}],
        "networkInterfaces": [{"network": "global/networks/default",
            "accessConfigs": [{"type": "ONE_TO_ONE_NAT"}]}],
        "labels": {"provisioner-idempotency-key": key, "suite": "rust"},
        "metadata": {"items": [
            {"key": "ssh-keys", "value": format!("root:{PUBLIC_KEY}")},
            {"key": "user-data", "value": "#cloud-config\n"},
        ]},
    })
}

const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM1MQrOGZkyTYSLN/FGDhozOMWieTtIaVBkR5a83m5IW sdk@test";

/// A refusal in Google's shape: HTTP status and `error.code` are `code`, the first
/// error's `reason` is `reason`, with a message and an RPC status.
fn assert_google_error(status: u16, body: &Value, code: u16, reason: &str) {
    assert_eq!(status, code, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["errors"][0]["reason"], reason, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["status"].is_string(), "{body}");
}

/// A JWT grant signed by the registered key, with Google's audience (or the endpoint's own),
/// a sane lifetime and a scope buys a token the Compute API takes; a bad signature, an
/// unknown account, a wrong audience or lifetime, no scope or another grant type does not.
#[tokio::test]
async fn the_token_endpoint_takes_only_a_registered_accounts_valid_jwt() {
    let sim = Sim::start().await;
    let jwt = sign(&sim.key, &grant_claims(EMAIL));
    let (status, body) = sim.grant(JWT_BEARER, &jwt).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    let token = body["access_token"].as_str().unwrap();
    let (status, _) = sim.get(&sim.compute("/aggregated/instances"), token).await;
    assert_eq!(status, 200);

    // The sim's own token URL is an audience too.
    let mut claims = grant_claims(EMAIL);
    claims["aud"] = json!(format!("http://{}/gcp/token", sim.addr));
    assert_eq!(sim.grant(JWT_BEARER, &sign(&sim.key, &claims)).await.0, 200);

    // A signature that does not verify.
    let mut tampered = jwt.clone();
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    let (status, body) = sim.grant(JWT_BEARER, &tampered).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert_eq!(body["error_description"], "Invalid JWT Signature.");
    // An account the simulator does not know.
    let (status, body) = sim
        .grant(
            JWT_BEARER,
            &sign(&sim.key, &grant_claims("nobody@x.iam.gserviceaccount.com")),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    // A wrong audience, an over-long lifetime, an expired assertion, no scope.
    for (field, value, error) in [
        ("aud", json!("https://example.com/token"), "invalid_grant"),
        ("exp", json!(now() + 7200), "invalid_grant"),
        ("exp", json!(now() - 10), "invalid_grant"),
        ("scope", json!(""), "invalid_scope"),
    ] {
        let mut claims = grant_claims(EMAIL);
        claims[field] = value;
        let (status, body) = sim.grant(JWT_BEARER, &sign(&sim.key, &claims)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(error)),
            "{field}: {body}"
        );
    }
    let (status, body) = sim.grant("client_credentials", &jwt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
}

/// Unknown and expired tokens are a 401 `UNAUTHENTICATED`, a token without a Compute scope or
/// for another project a 403; a self-signed JWT of the account (AIP-4111) is taken.
#[tokio::test]
async fn unknown_expired_and_unscoped_tokens_are_refused() {
    let sim = Sim::start().await;
    let url = sim.compute("/aggregated/instances");
    let (status, body) = sim.get(&url, "ya29.made-up").await;
    assert_google_error(status, &body, 401, "authError");
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");

    // An account whose tokens last a second.
    let short = "short@sim-project.iam.gserviceaccount.com";
    sim.register(short, PROJECT, &sim.key, Some(1)).await;
    let (status, body) = sim
        .grant(JWT_BEARER, &sign(&sim.key, &grant_claims(short)))
        .await;
    assert_eq!((status, body["expires_in"].as_u64()), (200, Some(1)));
    let token = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(sim.get(&url, &token).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(sim.get(&url, &token).await.0, 401);

    // A token without a Compute scope.
    let mut claims = grant_claims(EMAIL);
    claims["scope"] = json!("https://www.googleapis.com/auth/devstorage.read_only");
    let (_, body) = sim.grant(JWT_BEARER, &sign(&sim.key, &claims)).await;
    let (status, body) = sim
        .call(
            reqwest::Method::GET,
            &url,
            body["access_token"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // Another project.
    let token = sim.token().await;
    let other = format!(
        "http://{}/gcp/compute/v1/projects/other/aggregated/instances",
        sim.addr
    );
    let (status, body) = sim.get(&other, &token).await;
    assert_google_error(status, &body, 403, "forbidden");

    // A self-signed JWT, as Google's client libraries send (AIP-4111).
    let self_signed = json!({"iss": EMAIL, "sub": EMAIL, "aud": "https://compute.googleapis.com/",
        "iat": now(), "exp": now() + 3600});
    let (status, _) = sim
        .call(
            reqwest::Method::GET,
            &url,
            &sign(&sim.key, &self_signed),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

/// Polls an operation until it is `DONE`.
async fn wait_done(sim: &Sim, token: &str, operation: &Value) -> Value {
    let name = operation["name"].as_str().unwrap();
    let url = sim.compute(&format!("/zones/{ZONE}/operations/{name}"));
    for _ in 0..100 {
        let (status, body) = sim.get(&url, token).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] == "DONE" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("operation {name} never finished");
}

/// An insert's operation runs until the boot delay has passed (the instance PROVISIONING or
/// STAGING meanwhile, RUNNING after); a repeated requestId answers the same operation and
/// makes nothing; a taken name is a 409; a delete's operation leaves the instance STOPPING,
/// then gone (404).
#[tokio::test]
async fn instances_are_made_deduplicated_listed_and_deleted_through_operations() {
    let sim = Sim::start().await;
    let token = sim.token().await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let insert_url = format!(
        "{}?requestId={request_id}",
        sim.compute(&format!("/zones/{ZONE}/instances"))
    );
    let (status, op) = sim
        .insert(&insert_url, &token, instance_body("web-1", "key-1"))
        .await;
    assert_eq!(status, 200, "{op}");
    assert_eq!(op["kind"], "compute#operation");
    assert_eq!(
        (op["status"].as_str(), op["operationType"].as_str()),
        (Some("RUNNING"), Some("insert"))
    );
    assert_eq!(op["user"], EMAIL);
    assert!(
        op["targetLink"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/projects/{PROJECT}/zones/{ZONE}/instances/web-1"))
    );

    // The same requestId: the same operation, nothing new.
    let (status, again) = sim
        .insert(&insert_url, &token, instance_body("web-1", "key-1"))
        .await;
    assert_eq!((status, &again["name"]), (200, &op["name"]));
    // Another requestId, the same name: taken.
    let (status, body) = sim
        .insert(
            &sim.compute(&format!("/zones/{ZONE}/instances")),
            &token,
            instance_body("web-1", "key-1"),
        )
        .await;
    assert_google_error(status, &body, 409, "alreadyExists");

    let instance_url = sim.compute(&format!("/zones/{ZONE}/instances/web-1"));
    let (_, instance) = sim.get(&instance_url, &token).await;
    assert!(
        matches!(
            instance["status"].as_str(),
            Some("PROVISIONING" | "STAGING")
        ),
        "{instance}"
    );

    // operations.wait answers once the operation is done.
    let name = op["name"].as_str().unwrap();
    let (status, waited) = sim
        .call(
            reqwest::Method::POST,
            &sim.compute(&format!("/zones/{ZONE}/operations/{name}/wait")),
            &token,
            None,
        )
        .await;
    assert_eq!(
        (status, waited["status"].as_str()),
        (200, Some("DONE")),
        "{waited}"
    );
    assert_eq!(waited["progress"], 100);
    assert!(waited["error"].is_null());

    let (_, instance) = sim.get(&instance_url, &token).await;
    assert_eq!(instance["status"], "RUNNING");
    assert_eq!(instance["labels"]["provisioner-idempotency-key"], "key-1");
    assert!(
        instance["machineType"]
            .as_str()
            .unwrap()
            .ends_with("/zones/us-central1-a/machineTypes/e2-small")
    );
    assert!(
        instance["networkInterfaces"][0]["accessConfigs"][0]["natIP"]
            .as_str()
            .unwrap()
            .starts_with("203.0.")
    );
    assert_eq!(instance["id"], waited["targetId"]);

    // What reached the simulated machine, and only one made.
    let servers = sim.sim_get("/_sim/servers").await;
    let server = &common::server_of(&servers, "gcp");
    assert_eq!(server["ssh_keys"], json!([PUBLIC_KEY]));
    assert_eq!(server["user_data"], "#cloud-config\n");
    let stats = sim.sim_get("/_sim/stats").await;
    assert_eq!(stats["vendors"]["gcp"]["created_total"], 1, "{stats}");

    // Delete: STOPPING, then gone.
    let (status, delete) = sim
        .call(reqwest::Method::DELETE, &instance_url, &token, None)
        .await;
    assert_eq!(
        (status, delete["operationType"].as_str()),
        (200, Some("delete")),
        "{delete}"
    );
    let (_, instance) = sim.get(&instance_url, &token).await;
    assert_eq!(instance["status"], "STOPPING");
    wait_done(&sim, &token, &delete).await;
    let (status, body) = sim.get(&instance_url, &token).await;
    assert_google_error(status, &body, 404, "notFound");
}

/// `aggregated/instances` filtered by a label returns exactly the matching instances across
/// zones and pages (`maxResults`, `nextPageToken`), seeded ones included; a filter it cannot
/// read is a 400.
#[tokio::test]
async fn aggregated_lists_filter_by_label_over_every_page() {
    let sim = Sim::start().await;
    let token = sim.token().await;
    for (index, zone) in [
        "us-central1-a",
        "us-east1-b",
        "europe-west1-b",
        "us-central1-a",
        "asia-east1-a",
    ]
    .iter()
    .enumerate()
    {
        let mut body = instance_body(&format!("vm-{index}"), &format!("key-{index}"));
        body["machineType"] = json!(format!("zones/{zone}/machineTypes/e2-micro"));
        if index == 4 {
            body["labels"]["suite"] = json!("other");
        }
        let url = sim.compute(&format!("/zones/{zone}/instances"));
        let (status, op) = sim.insert(&url, &token, body).await;
        assert_eq!(status, 200, "{op}");
    }
    // A server another tool made (seeded through /_sim/servers): a key, no suite label.
    let seeded = sim
        .http
        .post(format!("http://{}/_sim/servers", sim.addr))
        .json(&json!({"vendor": "gcp", "name": "seeded-1", "idempotency_key": "key-seeded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(seeded.status(), 201);
    let mut names = Vec::new();
    let mut page_token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!(
            "{}?maxResults=2&filter={}",
            sim.compute("/aggregated/instances"),
            "labels.suite%20%3D%20rust"
        );
        if let Some(token) = &page_token {
            url.push_str(&format!("&pageToken={token}"));
        }
        let (status, body) = sim.get(&url, &token).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        for (scope, list) in body["items"].as_object().unwrap() {
            match list["instances"].as_array() {
                Some(instances) => {
                    for instance in instances {
                        assert!(instance["zone"].as_str().unwrap().ends_with(scope.as_str()));
                        names.push(instance["name"].as_str().unwrap().to_string());
                    }
                }
                None => assert_eq!(list["warning"]["code"], "NO_RESULTS_ON_PAGE"),
            }
        }
        match body["nextPageToken"].as_str() {
            Some(next) => page_token = Some(next.to_string()),
            None => break,
        }
    }
    names.sort();
    assert_eq!(names, ["vm-0", "vm-1", "vm-2", "vm-3"]);
    assert_eq!(pages, 2);

    // One key, one instance.
    for (key, zone, name) in [
        ("%22key-4%22", "asia-east1-a", "vm-4"),
        ("key-seeded", "us-central1-a", "seeded-1"),
    ] {
        let url = format!(
            "{}?filter=labels.provisioner-idempotency-key%20%3D%20{key}",
            sim.compute("/aggregated/instances"),
        );
        let (_, body) = sim.get(&url, &token).await;
        assert_eq!(
            body["items"][format!("zones/{zone}")]["instances"][0]["name"],
            name,
            "{body}"
        );
    }
    let (status, body) = sim
        .get(
            &format!("{}?filter=nonsense", sim.compute("/aggregated/instances")),
            &token,
        )
        .await;
    assert_google_error(status, &body, 400, "invalid");
}

/// Bad names, machine types, labels, images, requestIds and zones are refused in Google's
/// shape; the shared faults render as Google's 429/503/401; the quota and zone-exhaustion
/// faults refuse or fail one insert each without making an instance.
#[tokio::test]
async fn bad_requests_and_faults_come_in_googles_shapes() {
    let sim = Sim::start().await;
    let token = sim.token().await;
    let url = sim.compute(&format!("/zones/{ZONE}/instances"));
    bad_inserts_are_refused(&sim, &token, &url).await;
    shared_faults_render_as_googles(&sim, &token).await;
    compute_faults_refuse_or_fail_one_insert(&sim, &token, &url).await;
}

/// Bad names, machine types, labels, images, requestIds and zones: Google's 400s and 404s.
async fn bad_inserts_are_refused(sim: &Sim, token: &str, url: &str) {
    let cases = [
        ("name", json!("Web_1"), 400),
        ("machineType", json!("e2-small"), 400),
        (
            "machineType",
            json!("zones/us-east1-b/machineTypes/e2-small"),
            400,
        ),
        (
            "machineType",
            json!(format!("zones/{ZONE}/machineTypes/huge")),
            404,
        ),
        ("labels", json!({"Upper": "x"}), 400),
        ("labels", json!({"ok": "x".repeat(64)}), 400),
    ];
    for (field, value, code) in cases {
        let mut body = instance_body("web-bad", "k");
        body[field] = value;
        let (status, answer) = sim.insert(url, token, body).await;
        assert_eq!(status, code, "{field}: {answer}");
        assert_eq!(answer["error"]["code"], code);
    }
    let mut unknown_image = instance_body("web-bad", "k");
    unknown_image["disks"][0]["initializeParams"]["sourceImage"] =
        json!("projects/debian-cloud/global/images/family/debian-99");
    let bad_id = format!("{url}?requestId=not-a-uuid");
    let unknown_zone = sim.compute("/zones/mars-1a/instances");
    for (target, body, expected) in [
        (url, unknown_image, 404),
        (bad_id.as_str(), instance_body("web-x", "k"), 400),
        (unknown_zone.as_str(), instance_body("web-x", "k"), 404),
    ] {
        let (status, answer) = sim.insert(target, token, body).await;
        assert_eq!(status, expected, "{target}: {answer}");
    }
}

/// The shared fault kinds render as Google's 429, 503 and 401.
async fn shared_faults_render_as_googles(sim: &Sim, token: &str) {
    let armed = sim
        .arm(
            "/_sim/faults",
            json!({"vendor": "gcp", "kind": "rate_limit", "retry_after_secs": 3}),
        )
        .await;
    assert_eq!(armed, 201);
    let answer = sim
        .http
        .get(sim.compute("/aggregated/instances"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["retry-after"], "3");
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap();
    assert_google_error(status, &body, 429, "rateLimitExceeded");
    sim.arm(
        "/_sim/faults",
        json!({"vendor": "gcp", "kind": "server_error", "status": 503}),
    )
    .await;
    let (status, body) = sim.get(&sim.compute("/aggregated/instances"), token).await;
    assert_google_error(status, &body, 503, "backendError");
    sim.arm(
        "/_sim/faults",
        json!({"vendor": "gcp", "kind": "unauthorized"}),
    )
    .await;
    assert_eq!(
        sim.get(&sim.compute("/aggregated/instances"), token)
            .await
            .0,
        401
    );
}

/// The quota fault refuses one insert at once, the zone-exhaustion fault fails one insert's
/// operation; neither makes an instance, and the next insert works.
async fn compute_faults_refuse_or_fail_one_insert(sim: &Sim, token: &str, url: &str) {
    // Quota: a 403 at once, nothing made.
    let armed = sim
        .arm("/_sim/gcp/faults", json!({"kind": "quota_exceeded"}))
        .await;
    assert_eq!(armed, 201);
    let (status, body) = sim.insert(url, token, instance_body("web-q", "kq")).await;
    assert_google_error(status, &body, 403, "quotaExceeded");
    // No resources in the zone: an operation that ends in ZONE_RESOURCE_POOL_EXHAUSTED.
    sim.arm(
        "/_sim/gcp/faults",
        json!({"kind": "zone_resource_pool_exhausted"}),
    )
    .await;
    let (status, op) = sim.insert(url, token, instance_body("web-z", "kz")).await;
    assert_eq!(status, 200, "{op}");
    let done = wait_done(sim, token, &op).await;
    assert_eq!(
        done["error"]["errors"][0]["code"], "ZONE_RESOURCE_POOL_EXHAUSTED",
        "{done}"
    );
    assert_eq!(
        sim.get(
            &sim.compute(&format!("/zones/{ZONE}/instances/web-z")),
            token
        )
        .await
        .0,
        404
    );
    // Disarmed: the next insert works.
    let (status, op) = sim.insert(url, token, instance_body("web-z", "kz")).await;
    assert_eq!(status, 200);
    assert!(wait_done(sim, token, &op).await["error"].is_null());
    let stats = sim.sim_get("/_sim/stats").await;
    assert_eq!(stats["vendors"]["gcp"]["created_total"], 1, "{stats}");
}

/// `GET /_sim/gcp/token-grants` counts the access tokens the token endpoint issued, per
/// account, and not the grants it refused: how a test sees that one exchange served many
/// calls.
#[tokio::test]
async fn the_token_grants_are_counted_per_account() {
    let sim = Sim::start().await;
    let grants = || sim.sim_get("/_sim/gcp/token-grants");
    assert_eq!(grants().await["total"], 0);
    sim.token().await;
    sim.token().await;
    let (status, _) = sim.grant(JWT_BEARER, "not.a.jwt").await;
    assert_eq!(status, 400);
    let counted = grants().await;
    assert_eq!(counted["total"], 2, "{counted}");
    assert_eq!(counted["accounts"][EMAIL], 2, "{counted}");
}
