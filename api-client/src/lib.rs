//! The order API over HTTP, as every client of it in this workspace calls it: the CLI
//! (`provisioner`), the end-to-end tests (`provisioner_tests::Stack`) and the benchmarks.
//!
//! An [`ApiClient`] is a base URL (e.g. `http://127.0.0.1:8080`) and a `reqwest::Client`
//! that sends `Authorization: Bearer <token>` with every request (or no token). Its calls
//! come in three kinds:
//! - checked calls ([`ApiClient::get`], [`ApiClient::create_order`], [`ApiClient::order`],
//!   [`ApiClient::follow`], ...): the JSON answer of a success; an error answer
//!   (`application/problem+json`) becomes an error that says what the API said.
//! - [`ApiClient::status_and_json`]: the status code and the JSON answer, whatever the status,
//!   for callers that look at refusals themselves.
//! - [`ApiClient::send_raw`], [`ApiClient::post_order_body`] and [`ApiClient::request`]: the
//!   `reqwest::Response` (or the request, to add headers to), for callers that assert on
//!   status codes and headers or time the requests.
//!
//! A caller that needs its own connection settings (the benchmarks' pool sizes) builds its
//! `reqwest::Client` (e.g. from [`client_builder`]) and hands it to [`ApiClient::with_http`].
//!
//! # Layout
//! - this file: [`ApiClient`] and its calls (orders, the event stream, vendors, quotas,
//!   metrics), [`client_builder`] and [`client_with_token`], and how problem answers read.

use anyhow::Context;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

/// A `reqwest::ClientBuilder` whose clients send `Authorization: Bearer <token>` with every
/// request (unless a request sets its own), or nothing when `token` is `None`.
pub fn client_builder(token: Option<&str>) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token cannot be sent in a header")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder().default_headers(headers))
}

/// An HTTP client that sends `Authorization: Bearer <token>` with every request.
pub fn client_with_token(token: &str) -> anyhow::Result<reqwest::Client> {
    Ok(client_builder(Some(token))?.build()?)
}

/// A client of one order API, with one token (or none).
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
}

impl ApiClient {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:8080`) sending `token`.
    pub fn new(base: &str, token: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self::with_http(base, client_builder(token)?.build()?))
    }

    /// A client of the API at `base` sending its requests with `http` (which carries the
    /// token, if any, and the connection settings).
    pub fn with_http(base: &str, http: reqwest::Client) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// The `reqwest::Client` the calls go through.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The API's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The URL of `path` (which starts with `/`, and may carry a query).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request of `method path`, to add headers to and send.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// Sends `method path` with `body` as JSON (if any); the response, whatever its status.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Response> {
        let mut request = self.request(method.clone(), path);
        if let Some(body) = body {
            request = request.json(body);
        }
        request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))
    }

    /// Sends `method path` with `body` as JSON (if any); the status code and the answer as
    /// JSON, whatever the status.
    pub async fn status_and_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let response = self.send_raw(method.clone(), path, body).await?;
        let status = response.status().as_u16();
        let json = response
            .json()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        Ok((status, json))
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        send(self.request(Method::GET, path)).await
    }

    /// `POST path` without a body, as JSON.
    pub async fn post(&self, path: &str) -> anyhow::Result<Value> {
        send(self.request(Method::POST, path)).await
    }

    /// `PUT path` of `body`, as JSON.
    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        send(self.request(Method::PUT, path).json(body)).await
    }

    /// `DELETE path`, as JSON.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        send(self.request(Method::DELETE, path)).await
    }

    /// `POST /v1/orders` of `body`, with an `Idempotency-Key` when `key` is given; the
    /// accepted order.
    pub async fn create_order(&self, body: &Value, key: Option<&str>) -> anyhow::Result<Value> {
        let mut request = self.request(Method::POST, "/v1/orders").json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        send(request).await
    }

    /// `POST /v1/orders` of `body` as it is (JSON or not, sent as `application/json`), with
    /// an `Idempotency-Key` when `key` is given; the response, whatever its status.
    pub async fn post_order_body(
        &self,
        body: String,
        key: Option<&str>,
    ) -> anyhow::Result<Response> {
        let mut request = self
            .request(Method::POST, "/v1/orders")
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.context("POST /v1/orders")
    }

    /// `GET /v1/orders/{id}`: the order with its event log.
    pub async fn order(&self, id: &str) -> anyhow::Result<Value> {
        self.get(&format!("/v1/orders/{id}")).await
    }

    /// One page of `GET /v1/orders?<query>` (`query` as in `status=active&limit=50`, may be
    /// empty): `{"orders": [...], "next_cursor": ...}`.
    pub async fn list_orders(&self, query: &str) -> anyhow::Result<Value> {
        self.get(&format!("/v1/orders?{query}")).await
    }

    /// Every order `GET /v1/orders?<query>` lists, following `next_cursor` through the pages.
    pub async fn list_all_orders(&self, query: &str) -> anyhow::Result<Vec<Value>> {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut page_query = query.to_string();
            if let Some(cursor) = &cursor {
                page_query.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.list_orders(&page_query).await?;
            orders.extend(page["orders"].as_array().into_iter().flatten().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(orders),
            }
        }
    }

    /// `POST /v1/orders/{id}/cancel`: the order, cancelling.
    pub async fn cancel_order(&self, id: &str) -> anyhow::Result<Value> {
        self.post(&format!("/v1/orders/{id}/cancel")).await
    }

    /// `DELETE /v1/orders/{id}`: the order, deleting.
    pub async fn delete_order(&self, id: &str) -> anyhow::Result<Value> {
        self.delete(&format!("/v1/orders/{id}")).await
    }

    /// `GET /v1/vendors`: the vendors served, `{"vendors": [{"vendor": ...}, ...]}`.
    pub async fn vendors(&self) -> anyhow::Result<Value> {
        self.get("/v1/vendors").await
    }

    /// `GET /v1/quotas`: the caller's quotas and usage.
    pub async fn quotas(&self) -> anyhow::Result<Value> {
        self.get("/v1/quotas").await
    }

    /// `PUT /v1/tenants/{tenant}/quotas` of `quotas` (an admin's call).
    pub async fn set_tenant_quotas(&self, tenant: &str, quotas: &Value) -> anyhow::Result<Value> {
        self.put(&format!("/v1/tenants/{tenant}/quotas"), quotas)
            .await
    }

    /// `GET /metrics`, as Prometheus text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        checked(
            self.request(Method::GET, "/metrics")
                .send()
                .await
                .context("GET /metrics")?,
        )
        .await?
        .text()
        .await
        .context("reading /metrics")
    }

    /// Follows `GET /v1/orders/{id}/events`, calling `on_event` with each event of the
    /// order's log, until the `end` event; answers the settled order. Reconnects (with
    /// `Last-Event-ID`) when the stream breaks before the end.
    pub async fn follow(
        &self,
        id: &str,
        mut on_event: impl FnMut(&Value),
    ) -> anyhow::Result<Value> {
        let mut last_event_id: Option<String> = None;
        let mut breaks = 0;
        loop {
            let mut request = self
                .request(Method::GET, &format!("/v1/orders/{id}/events"))
                .header("accept", "text/event-stream");
            if let Some(last) = &last_event_id {
                request = request.header("last-event-id", last);
            }
            let response = checked(request.send().await.context("connecting to the API")?).await?;
            let mut events = response.bytes_stream().eventsource();
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        eprintln!("(the event stream broke: {error}; reconnecting)");
                        break;
                    }
                };
                let data: Value = serde_json::from_str(&event.data)
                    .with_context(|| format!("an event that is not JSON: {}", event.data))?;
                match event.event.as_str() {
                    "end" => return Ok(data),
                    "order-event" => {
                        if !event.id.is_empty() {
                            last_event_id = Some(event.id.clone());
                        }
                        on_event(&data);
                    }
                    _ => {}
                }
            }
            breaks += 1;
            anyhow::ensure!(breaks <= 10, "the event stream kept breaking; gave up");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

/// Sends a request and reads the JSON answer; an error answer becomes an error that says
/// what the API said.
async fn send(request: RequestBuilder) -> anyhow::Result<Value> {
    let response = checked(request.send().await.context("connecting to the API")?).await?;
    response.json().await.context("reading the API's answer")
}

/// The response if it succeeded; else its problem as an error.
async fn checked(response: Response) -> anyhow::Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    anyhow::bail!(problem_message(status, &text))
}

/// What an error answer of `status` with body `text` says, for a person: the problem's
/// title and detail, each invalid field, and the vendors served when the vendor was unknown.
fn problem_message(status: reqwest::StatusCode, text: &str) -> String {
    let problem: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let mut message = match (problem["title"].as_str(), problem["detail"].as_str()) {
        (Some(title), Some(detail)) => format!("{status}: {title}: {detail}"),
        _ => format!("{status}: {text}"),
    };
    for error in problem["errors"].as_array().into_iter().flatten() {
        message.push_str(&format!(
            "\n  {}: {}",
            error["field"].as_str().unwrap_or("?"),
            error["message"].as_str().unwrap_or("?")
        ));
    }
    if let Some(known) = problem["known_vendors"].as_array() {
        let names: Vec<&str> = known.iter().filter_map(Value::as_str).collect();
        message.push_str(&format!("\n  vendors served: {}", names.join(", ")));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn a_problem_reads_as_its_title_detail_fields_and_vendors() {
        let text = serde_json::json!({
            "title": "Invalid order",
            "detail": "2 fields are invalid",
            "errors": [
                {"field": "name", "message": "must not be empty"},
                {"field": "size", "message": "unknown size"},
            ],
            "known_vendors": ["hetzner", "aws"],
        })
        .to_string();
        assert_eq!(
            problem_message(StatusCode::UNPROCESSABLE_ENTITY, &text),
            "422 Unprocessable Entity: Invalid order: 2 fields are invalid\n  \
             name: must not be empty\n  size: unknown size\n  vendors served: hetzner, aws"
        );
    }

    #[test]
    fn an_answer_that_is_no_problem_reads_as_its_text() {
        assert_eq!(
            problem_message(StatusCode::BAD_GATEWAY, "upstream down"),
            "502 Bad Gateway: upstream down"
        );
    }

    #[test]
    fn paths_join_the_base_without_a_double_slash() {
        let api = ApiClient::new("http://127.0.0.1:8080/", Some("secret")).unwrap();
        assert_eq!(api.base_url(), "http://127.0.0.1:8080");
        assert_eq!(
            api.url("/v1/orders?limit=1"),
            "http://127.0.0.1:8080/v1/orders?limit=1"
        );
    }

    #[test]
    fn a_token_that_is_no_header_value_is_refused() {
        assert!(ApiClient::new("http://127.0.0.1:8080", Some("bad\ntoken")).is_err());
    }
}
