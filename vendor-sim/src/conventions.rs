//! What every simulated vendor reads from a request the same way: the bearer token (and the
//! middleware checking a static one), RFC 1123 server names, and the label under which
//! provider plugins carry the idempotency key; and how the simulator's own endpoints refuse
//! a body.

/// The label (tag, metadata key) under which provider plugins carry the idempotency key.
/// The simulator uses it to count servers per key and report duplicates.
pub const IDEMPOTENCY_LABEL: &str = "provisioner-idempotency-key";

/// The token of an `Authorization: Bearer <token>` header (Hetzner, DigitalOcean, Example
/// Cloud).
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    value
        .strip_prefix("Bearer ")
        .map(|token| token.trim().to_string())
}

/// A vendor's check of a static bearer token (Hetzner, DigitalOcean, Example Cloud): the one
/// token it accepts, and its own answer to a request without it.
#[derive(Clone)]
struct BearerCheck {
    /// The token accepted.
    token: String,
    /// The vendor's 401 answer.
    refusal: fn() -> axum::response::Response,
}

/// `api`, one vendor's router, letting through only requests that carry
/// `Authorization: Bearer <token>`; any other is answered `refusal()`. Like every route
/// layer it leaves alone requests for no route.
pub fn with_bearer_token<S: Clone + Send + Sync + 'static>(
    api: axum::Router<S>,
    token: &str,
    refusal: fn() -> axum::response::Response,
) -> axum::Router<S> {
    let check = BearerCheck {
        token: token.to_owned(),
        refusal,
    };
    api.route_layer(axum::middleware::from_fn_with_state(
        check,
        require_bearer_token,
    ))
}

/// Lets a request through when it carries `Authorization: Bearer` with the checked token,
/// else answers the vendor's refusal.
async fn require_bearer_token(
    axum::extract::State(check): axum::extract::State<BearerCheck>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match bearer_token(request.headers()) {
        Some(token) if token == check.token => next.run(request).await,
        _ => (check.refusal)(),
    }
}

/// An RFC 1123 hostname, as the vendors require for server names.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The simulator's refusal of a request to one of its own endpoints (`/_sim/...`, the
/// proxy's too): 422 `{"error": message}`.
pub fn unprocessable(message: impl Into<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are hostnames, as the vendors require.
    #[test]
    fn hostnames_are_checked() {
        assert!(valid_hostname("web-1"));
        assert!(!valid_hostname("-web"));
        assert!(!valid_hostname("web_1"));
        assert!(!valid_hostname(""));
    }
}
