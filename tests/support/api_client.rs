//! The order API as the tests call it: [`Stack`]'s calls to its order-api (orders, vendors,
//! metrics, orphans), made through [`ApiClient`] (the workspace's one client of the API), and
//! reading what it answers.

use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::{Context, bail};
use provisioner_api_client::ApiClient;
use reqwest::Method;
use serde_json::Value;

use crate::fixtures::fixture;
use crate::stack::Stack;
use crate::waiting::wait_until;

/// The id of the order `name` whose POST answered `status` with `json`, if it was accepted.
fn accepted_id(name: &str, status: u16, json: &Value) -> anyhow::Result<String> {
    if status != 202 {
        bail!("ordering {name} answered {status}: {json}");
    }
    json["id"]
        .as_str()
        .map(str::to_string)
        .context("the answer has no id")
}

/// The messages of an order's event log (`GET /v1/orders/{id}`), oldest first.
pub fn event_messages(order: &Value) -> Vec<String> {
    order["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["message"].as_str().map(str::to_string))
        .collect()
}

/// What `orders` (as the API lists them) use: (live servers, orders in flight), counted from
/// their statuses as the README's *Quotas and order rates* defines them.
pub fn usage_of_orders<'a>(orders: impl IntoIterator<Item = &'a Value>) -> (u64, u64) {
    let mut usage = (0, 0);
    for order in orders {
        match order["status"].as_str().unwrap_or_default() {
            "active" => usage.0 += 1,
            "pending" | "queued" | "provisioning" | "deleting" | "cancelling" => {
                usage.0 += 1;
                usage.1 += 1;
            }
            _ => {}
        }
    }
    usage
}

/// The value of one series in Prometheus text (`name{labels}` exactly as written there).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// One event of a server-sent event stream (`/events`).
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// Its `event:` name (`message` when it has none).
    pub name: String,
    /// Its `id:`, if any.
    pub id: Option<String>,
    /// Its `data:`, as JSON.
    pub data: Value,
}

/// The events in the text of a server-sent event stream, in order; keep-alive comments and
/// blocks without data are left out.
pub fn sse_events(text: &str) -> anyhow::Result<Vec<SseEvent>> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let (mut name, mut id, mut data) = (String::from("message"), None, String::new());
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_string();
            } else if let Some(value) = line.strip_prefix("id:") {
                id = Some(value.trim().to_string());
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim());
            }
        }
        if data.is_empty() {
            continue;
        }
        let data = serde_json::from_str(&data).with_context(|| format!("event data: {data}"))?;
        events.push(SseEvent { name, id, data });
    }
    Ok(events)
}

/// POSTs `body` as an order through `api`, with `key` as its `Idempotency-Key` if given;
/// the status and the JSON answer, whatever the status.
pub async fn post_order_with(
    api: &ApiClient,
    body: String,
    key: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let response = api.post_order_body(body, key).await?;
    let status = response.status().as_u16();
    let json = response
        .json()
        .await
        .context("reading the answer to POST /v1/orders")?;
    Ok((status, json))
}

impl Stack {
    /// The stack's order API, called with [`Stack::http`] (so with [`Stack::token`]).
    pub fn api(&self) -> ApiClient {
        self.api_with(&self.http)
    }

    /// The stack's order API, called with `client` (another tenant's token, or none).
    pub fn api_with(&self, client: &reqwest::Client) -> ApiClient {
        ApiClient::with_http(&self.api_url, client.clone())
    }

    /// Another order-api of the stack at `api_url` ([`Stack::start_another_api`]), called
    /// with [`Stack::http`].
    pub fn api_at(&self, api_url: &str) -> ApiClient {
        ApiClient::with_http(api_url, self.http.clone())
    }

    /// The stack's order API, called with [`Stack::admin_token`].
    pub fn admin_api(&self) -> anyhow::Result<ApiClient> {
        ApiClient::new(&self.api_url, Some(&self.admin_token))
    }

    /// POSTs an order body; returns the status, the `Location` header and the JSON answer.
    pub async fn post_order(
        &self,
        body: &str,
    ) -> anyhow::Result<(u16, Option<String>, String, Value)> {
        let response = self.api().post_order_body(body.to_string(), None).await?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let json = response
            .json()
            .await
            .context("reading the answer as JSON")?;
        Ok((status, location, content_type, json))
    }

    /// POSTs the order `body` and returns its id; an error unless it is accepted (`202`).
    pub async fn order_accepted(&self, body: &Value) -> anyhow::Result<String> {
        let name = body["name"].as_str().unwrap_or_default();
        let (status, _, _, json) = self.post_order(&body.to_string()).await?;
        accepted_id(name, status, &json)
    }

    /// [`Stack::order_accepted`] for `body` with the fields of `extra` added (replacing any
    /// of the same name).
    pub async fn order_with_fields(&self, mut body: Value, extra: Value) -> anyhow::Result<String> {
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.order_accepted(&body).await
    }

    /// POSTs a valid Hetzner order named `name` and returns its id.
    pub async fn order_server(&self, name: &str) -> anyhow::Result<String> {
        self.order_at("hetzner", name).await
    }

    /// POSTs a valid order named `name` at `vendor` and returns its id.
    pub async fn order_at(&self, vendor: &str, name: &str) -> anyhow::Result<String> {
        let body = fixture(vendor).order_body(name);
        let (status, _, _, json) = self.post_order(&body).await?;
        accepted_id(name, status, &json)
    }

    /// POSTs a valid Hetzner order named `name` with `client` (another tenant's token) and
    /// returns its id.
    pub async fn order_as(&self, client: &reqwest::Client, name: &str) -> anyhow::Result<String> {
        let body = fixture("hetzner").order_body(name);
        let (status, json) = post_order_with(&self.api_with(client), body, None).await?;
        accepted_id(name, status, &json)
    }

    /// `GET /v1/orders/{id}` (the answer as JSON whatever its status).
    pub async fn order(&self, id: &str) -> anyhow::Result<Value> {
        let path = format!("/v1/orders/{id}");
        Ok(self
            .api()
            .status_and_json(Method::GET, &path, None)
            .await?
            .1)
    }

    /// Polls the order until its status is `status` (or the timeout passes).
    pub async fn wait_for_status(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let mut last = Value::Null;
        wait_until(
            timeout,
            Duration::from_millis(100),
            async || {
                // order-api may be restarting: a refused connection is not the end.
                if let Ok(order) = self.order(id).await {
                    if order["status"] == status {
                        return Ok(ControlFlow::Break(order));
                    }
                    let settled = [
                        "active",
                        "partially_active",
                        "failed",
                        "deleted",
                        "cancelled",
                    ];
                    if settled.iter().any(|s| order["status"] == *s) {
                        bail!(
                            "order {id} ended {} instead of {status}: {order}\n{}",
                            order["status"],
                            self.logs()
                        );
                    }
                    last = order;
                }
                Ok(ControlFlow::Continue(last.clone()))
            },
            async |last| {
                anyhow::anyhow!(
                    "order {id} did not reach {status} within {timeout:?}; last seen: {last}\n{}",
                    self.logs()
                )
            },
        )
        .await
    }

    /// Polls the order until one of its events' messages contains `text` (or the timeout
    /// passes); answers the order.
    pub async fn wait_for_event(
        &self,
        id: &str,
        text: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        wait_until(
            timeout,
            Duration::from_millis(100),
            async || {
                let order = self.order(id).await?;
                Ok(if event_messages(&order).iter().any(|m| m.contains(text)) {
                    ControlFlow::Break(order)
                } else {
                    ControlFlow::Continue(order)
                })
            },
            async |order| {
                anyhow::anyhow!(
                    "order {id} has no event saying '{text}' after {timeout:?}: {order}\n{}",
                    self.logs()
                )
            },
        )
        .await
    }

    /// Every order `GET /v1/orders?<query>` lists, paging through it (without events).
    pub async fn list_all_orders(&self, query: &str) -> anyhow::Result<Vec<Value>> {
        self.api()
            .list_all_orders(&format!("limit=200&{query}"))
            .await
    }

    /// The vendor ids `GET /v1/vendors` lists.
    pub async fn vendors(&self) -> anyhow::Result<Vec<String>> {
        let (_, answer) = self
            .api()
            .status_and_json(Method::GET, "/v1/vendors", None)
            .await?;
        Ok(answer["vendors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["vendor"].as_str().map(str::to_string))
            .collect())
    }

    /// `DELETE /v1/orders/{id}`: the status code and the answer.
    pub async fn delete_order(&self, id: &str) -> anyhow::Result<(u16, Value)> {
        let path = format!("/v1/orders/{id}");
        self.api()
            .status_and_json(Method::DELETE, &path, None)
            .await
    }

    /// Deletes the order, which must be accepted (`202`), and waits (up to `within`) until it
    /// is `deleted`; the deleted order.
    pub async fn delete_and_wait(&self, id: &str, within: Duration) -> anyhow::Result<Value> {
        let (status, answer) = self.delete_order(id).await?;
        anyhow::ensure!(status == 202, "deleting {id} answered {status}: {answer}");
        self.wait_for_status(id, "deleted", within).await
    }

    /// `POST /v1/orders/{id}/cancel`: the status code and the answer.
    pub async fn cancel_order(&self, id: &str) -> anyhow::Result<(u16, Value)> {
        let path = format!("/v1/orders/{id}/cancel");
        self.api().status_and_json(Method::POST, &path, None).await
    }

    /// `GET /metrics` of order-api, as text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        self.api().metrics().await
    }

    /// `GET /v1/orphans`: what the orphan sweep found, and each vendor's latest sweep.
    pub async fn orphan_report(&self) -> anyhow::Result<Value> {
        let admin = self.admin_api()?;
        Ok(admin
            .status_and_json(Method::GET, "/v1/orphans", None)
            .await?
            .1)
    }

    /// Asks for an orphan sweep and waits (up to `within`) until every vendor in `vendors`
    /// has answered a sweep newer than the ones before; returns `GET /v1/orphans` then.
    pub async fn sweep_orphans_within(
        &self,
        vendors: &[&str],
        within: Duration,
    ) -> anyhow::Result<Value> {
        let earlier: std::collections::BTreeSet<String> = self.orphan_report().await?["sweeps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|sweep| sweep["sweep_id"].as_str().map(str::to_string))
            .collect();
        let response = self
            .admin_api()?
            .send_raw(Method::POST, "/v1/orphans/sweep", None)
            .await?;
        if response.status() != 202 {
            bail!("POST /v1/orphans/sweep answered {}", response.status());
        }
        wait_until(
            within,
            Duration::from_millis(200),
            async || {
                let answer = self.orphan_report().await?;
                let sweeps = answer["sweeps"].as_array().cloned().unwrap_or_default();
                let done = vendors.iter().all(|vendor| {
                    sweeps.iter().any(|sweep| {
                        sweep["vendor"] == *vendor
                            && !sweep["finished_at"].is_null()
                            && !earlier.contains(sweep["sweep_id"].as_str().unwrap_or_default())
                    })
                });
                Ok(if done {
                    ControlFlow::Break(answer)
                } else {
                    ControlFlow::Continue(answer)
                })
            },
            async |answer| {
                anyhow::anyhow!(
                    "the sweep did not finish in {within:?}: {answer:#}\n{}",
                    self.logs()
                )
            },
        )
        .await
    }

    /// [`Stack::sweep_orphans_within`] 30 s.
    pub async fn sweep_orphans(&self, vendors: &[&str]) -> anyhow::Result<Value> {
        self.sweep_orphans_within(vendors, Duration::from_secs(30))
            .await
    }
}
