//! The OpenAPI 3.1 document, generated from the handlers' annotations (utoipa), served at
//! `GET /openapi.json`, and a browsable reference at `GET /docs` (Swagger UI, its files
//! embedded in the binary: it needs no internet).

use axum::Json;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::http::problem::{FieldError, Problem};
use crate::http::{dead_letters, events, me, order_feed, orders, orphans, quotas, vendors};

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "provisioner order API",
        description = "Order cloud servers: `POST /v1/orders` answers 202 at once; follow the order \
                       with `GET /v1/orders/{id}` or its Server-Sent Events. Every request needs \
                       `Authorization: Bearer <token>` (`order-api tokens create`)."
    ),
    paths(
        orders::create_order,
        orders::list_orders,
        orders::get_order,
        orders::delete_order,
        orders::cancel_order,
        events::order_events,
        order_feed::order_feed,
        vendors::list_vendors,
        vendors::vendor_catalogue,
        me::me,
        orders::webhook_secret,
        orphans::list_orphans,
        orphans::sweep_now,
        dead_letters::list_dead_letters,
        dead_letters::get_dead_letter,
        dead_letters::dismiss_dead_letter,
        quotas::get_quotas,
        quotas::get_tenant_quotas,
        quotas::put_tenant_quotas,
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerTokens),
    security(("bearer" = [])),
    tags(
        (name = "orders", description = "Ordering, following, cancelling and deleting servers"),
        (name = "vendors", description = "The vendors hosts serve"),
        (name = "operators", description = "Admin tokens only"),
    ),
)]
pub struct ApiDoc;

/// Declares the bearer-token scheme and the `401` every operation can answer.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token: `order-api tokens create`"))
                    .build(),
            ),
        );
        let unauthorized = ResponseBuilder::new()
            .description("No token, or an unknown or revoked one")
            .header(
                "www-authenticate",
                utoipa::openapi::header::Header::new(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::Type::String),
                ),
            )
            .content(
                "application/problem+json",
                Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Problem",
                )))),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.delete,
                &mut item.put,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                operation
                    .responses
                    .responses
                    .insert("401".into(), RefOr::T(unauthorized.clone()));
            }
        }
    }
}

/// The pattern of an `Idempotency-Key`: 1 to 255 visible ASCII characters.
const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";
/// The pattern of an `ssh_keys` entry: an OpenSSH public key line of a type the API knows
/// (the key itself must also decode: a 422 says when it does not).
const SSH_KEY_PATTERN: &str = "^(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|\
                               ecdsa-sha2-nistp521|sk-ssh-ed25519@openssh\\.com|\
                               sk-ecdsa-sha2-nistp256@openssh\\.com) [A-Za-z0-9+/]+={0,2}( [^\\r\\n]*)?$";

/// The API's OpenAPI document with the constraints utoipa's annotations cannot carry: the
/// lengths of each `ssh_keys` entry and of label keys and values, the `Idempotency-Key`
/// pattern, and the links from a new order to what can be done with it (so stateful clients
/// and testers reach an order's `GET`, `DELETE`, `cancel` and `events`).
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let create = &mut doc["components"]["schemas"]["CreateOrder"]["properties"];
    create["ssh_keys"]["items"] = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": orders::MAX_SSH_KEY_LEN,
        "pattern": SSH_KEY_PATTERN,
    });
    create["labels"]["propertyNames"] = json!({
        "minLength": 1,
        "maxLength": orders::MAX_LABEL_LEN,
        "pattern": "^[^\\t\\n\\f\\r ]([\\s\\S]*[^\\t\\n\\f\\r ])?$",
    });
    create["labels"]["maxProperties"] = json!(orders::MAX_LABELS);
    create["labels"]["additionalProperties"] = json!({
        "type": "string",
        "maxLength": orders::MAX_LABEL_LEN,
    });
    let post = &mut doc["paths"]["/v1/orders"]["post"];
    if let Some(parameters) = post["parameters"].as_array_mut() {
        for parameter in parameters {
            if parameter["name"] == "Idempotency-Key" {
                parameter["schema"] = json!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": IDEMPOTENCY_KEY_PATTERN,
                });
            }
        }
    }
    // Each link names an operation on the made order, by the id in the response's body.
    let link = |operation: &str, description: &str| {
        json!({
            "operationId": operation,
            "parameters": { "id": "$response.body#/id" },
            "description": description,
        })
    };
    let links = json!({
        "GetOrder": link("get_order", "The order, with its event log"),
        "CancelOrder": link("cancel_order", "Cancel the order on its way"),
        "DeleteOrder": link("delete_order", "Delete the order's server once it is active"),
        "OrderEvents": link("order_events", "Follow the order's events (Server-Sent Events)"),
    });
    for status in ["200", "202"] {
        if post["responses"][status].is_object() {
            post["responses"][status]["links"] = links.clone();
        }
    }
    doc
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

/// `GET /docs`: the API reference, Swagger UI reading `/openapi.json`, its files embedded in
/// the binary (no CDN: it works on a network with no internet).
pub fn docs<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    utoipa_swagger_ui::SwaggerUi::new("/docs")
        .config(utoipa_swagger_ui::Config::new(["/openapi.json"]))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document is OpenAPI 3.1, every operation needs the bearer token and may answer
    /// 401, and every `/v1` route is in it.
    #[test]
    fn documents_every_route_with_its_auth() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serialisable");
        assert!(
            doc["openapi"]
                .as_str()
                .unwrap_or_default()
                .starts_with("3.1")
        );
        assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
        let paths: Vec<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        for path in [
            "/v1/orders",
            "/v1/orders/{id}",
            "/v1/orders/{id}/events",
            "/v1/orders/{id}/cancel",
            "/v1/vendors",
            "/v1/orphans",
            "/v1/orphans/sweep",
            "/v1/webhooks/secret",
        ] {
            assert!(paths.contains(&path), "{path} missing from {paths:?}");
        }
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                assert!(
                    operation["responses"]["401"].is_object(),
                    "{method} {path} has no 401"
                );
            }
        }
    }
}
