//! The order API over HTTP: bearer token on every request, `application/problem+json`
//! errors turned into readable ones, and an order's Server-Sent Events. Moved here from the
//! CLI so that every client of the API in the workspace can share it.
//!
//! # Layout
//! - this file: [`Api`] and its calls, and how problem answers read.

use anyhow::Context;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

/// A client of one API with one token.
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:8080`) sending `token`.
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token cannot be sent in a header")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("provisioner-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        send(self.request(Method::GET, path)).await
    }

    /// `POST path` without a body, as JSON.
    pub async fn post(&self, path: &str) -> anyhow::Result<Value> {
        send(self.request(Method::POST, path)).await
    }

    /// `DELETE path`, as JSON.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        send(self.request(Method::DELETE, path)).await
    }

    /// `POST /v1/orders`.
    pub async fn create_order(&self, body: &Value, key: Option<&str>) -> anyhow::Result<Value> {
        let mut request = self.request(Method::POST, "/v1/orders").json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        send(request).await
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
async fn checked(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
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
    anyhow::bail!(message)
}
