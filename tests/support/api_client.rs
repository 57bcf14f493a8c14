//! The order API as the tests call it: [`Stack`]'s calls to its order-api (orders, vendors,
//! metrics, orphans), HTTP clients with a token, and reading what it answers.

use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::fixtures::fixture;
use crate::stack::Stack;
use crate::waiting::wait_until;

/// An HTTP client that sends `Authorization: Bearer <token>` with every request.
pub fn client_with_token(token: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .context("a token that is not a header value")?;
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

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

/// Sends `request` and reads its answer as JSON; the errors name the call `what` (e.g.
/// `GET /v1/vendors`).
pub(crate) async fn json_answer(
    request: reqwest::RequestBuilder,
    what: &str,
) -> anyhow::Result<Value> {
    request
        .send()
        .await
        .with_context(|| what.to_string())?
        .json()
        .await
        .with_context(|| format!("reading the answer to {what}"))
}

/// Sends `request`: the status code and the answer as JSON; the errors name the call `what`.
async fn status_and_json(
    request: reqwest::RequestBuilder,
    what: &str,
) -> anyhow::Result<(u16, Value)> {
    let response = request.send().await.with_context(|| what.to_string())?;
    let status = response.status().as_u16();
    let json = response
        .json()
        .await
        .with_context(|| format!("reading the answer to {what}"))?;
    Ok((status, json))
}

impl Stack {
    /// `POST /v1/orders` of `body`, sent with `client`.
    fn order_request(&self, client: &reqwest::Client, body: String) -> reqwest::RequestBuilder {
        client
            .post(format!("{}/v1/orders", self.api_url))
            .header("content-type", "application/json")
            .body(body)
    }

    /// POSTs an order body; returns the status, the `Location` header and the JSON answer.
    pub async fn post_order(
        &self,
        body: &str,
    ) -> anyhow::Result<(u16, Option<String>, String, Value)> {
        let response = self
            .order_request(&self.http, body.to_string())
            .send()
            .await
            .context("POST /v1/orders")?;
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
        let request = self.order_request(client, fixture("hetzner").order_body(name));
        let (status, json) = status_and_json(request, "POST /v1/orders").await?;
        accepted_id(name, status, &json)
    }

    /// `GET /v1/orders/{id}`.
    pub async fn order(&self, id: &str) -> anyhow::Result<Value> {
        let request = self.http.get(format!("{}/v1/orders/{id}", self.api_url));
        json_answer(request, "GET /v1/orders/{id}").await
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
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/orders?limit=200&{query}", self.api_url);
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page = json_answer(self.http.get(&url), "GET /v1/orders").await?;
            orders.extend(page["orders"].as_array().into_iter().flatten().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(orders),
            }
        }
    }

    /// The vendor ids `GET /v1/vendors` lists.
    pub async fn vendors(&self) -> anyhow::Result<Vec<String>> {
        let request = self.http.get(format!("{}/v1/vendors", self.api_url));
        let answer = json_answer(request, "GET /v1/vendors").await?;
        Ok(answer["vendors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["vendor"].as_str().map(str::to_string))
            .collect())
    }

    /// `DELETE /v1/orders/{id}`: the status code and the answer.
    pub async fn delete_order(&self, id: &str) -> anyhow::Result<(u16, Value)> {
        let request = self.http.delete(format!("{}/v1/orders/{id}", self.api_url));
        status_and_json(request, "DELETE /v1/orders/{id}").await
    }

    /// `POST /v1/orders/{id}/cancel`: the status code and the answer.
    pub async fn cancel_order(&self, id: &str) -> anyhow::Result<(u16, Value)> {
        let request = self
            .http
            .post(format!("{}/v1/orders/{id}/cancel", self.api_url));
        status_and_json(request, "POST /v1/orders/{id}/cancel").await
    }

    /// `GET /metrics` of order-api, as text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        self.http
            .get(format!("{}/metrics", self.api_url))
            .send()
            .await
            .context("GET /metrics")?
            .error_for_status()
            .context("GET /metrics")?
            .text()
            .await
            .context("reading /metrics")
    }

    /// `GET /v1/orphans`: what the orphan sweep found, and each vendor's latest sweep.
    pub async fn orphan_report(&self) -> anyhow::Result<Value> {
        let request = self
            .http
            .get(format!("{}/v1/orphans", self.api_url))
            .bearer_auth(&self.admin_token);
        json_answer(request, "GET /v1/orphans").await
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
            .http
            .post(format!("{}/v1/orphans/sweep", self.api_url))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .context("POST /v1/orphans/sweep")?;
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
