//! A signed EC2 Query API client: one call is one action in one region, signed with SigV4
//! (`provider_sdk::sigv4`, service `ec2`, the region's scope), its XML error answer mapped
//! to a [`ProviderError`] by EC2's error code first.
//!
//! Read-only actions (`Describe*`) go as `GET /?Action=...` with the parameters in the
//! query and no body; actions that change something (`RunInstances`,
//! `TerminateInstances`) as `POST /` with an `application/x-www-form-urlencoded` body (EC2
//! takes either verb for any action). The split matters beyond style: the SDK client
//! resends a GET whose connection dropped but never a POST (a create's answer may be lost
//! after the server was made), and a fault proxy in front of EC2 tells a create by its
//! `POST` carrying the idempotency key.
//!
//! Error codes (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html>)
//! decide the error before the HTTP status does: EC2 answers throttling with 503
//! `RequestLimitExceeded` (rate-limited, not a server failure), an unknown instance with
//! 400 `InvalidInstanceID.NotFound` (not-found, not a bad request), an exhausted quota with
//! 400 `InstanceLimitExceeded` / `VcpuLimitExceeded`, a zone out of capacity with 500
//! `InsufficientInstanceCapacity` (no-capacity, not a server failure).

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use provider_sdk::http::{
    ApiClient, ApiResponse, HttpMethod as Method, path_of, redact_urls, retry_after_ms,
};
use provider_sdk::sigv4::{self, Credentials, SigningError};
use provider_sdk::{ProviderError, get_config, get_secret, require_secret};

use crate::api::{self, ErrorAnswer};
use crate::query::Params;

/// The content type of a form body.
const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// How EC2 is reached: the signing credentials and where each region's endpoint is.
pub struct Ec2 {
    http: ApiClient,
    credentials: Credentials,
    /// `[config] endpoint`: one URL for every region (a fake of EC2), else the region's
    /// public endpoint.
    endpoint: Option<String>,
}

/// Whether an action reads (GET, query string) or changes something (POST, form body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `Describe*`: `GET /?...`, resent after a dropped connection.
    Read,
    /// `RunInstances`, `TerminateInstances`: `POST /`, sent once.
    Write,
}

impl Ec2 {
    /// The client the manifest configures: secrets `access-key-id`, `secret-access-key`
    /// and, for temporary credentials, `session-token`; `[config] endpoint`.
    pub fn from_config() -> Result<Self, ProviderError> {
        let credentials = Credentials {
            access_key_id: require_secret("access-key-id")?,
            secret_access_key: require_secret("secret-access-key")?,
            session_token: get_secret("session-token").filter(|token| !token.is_empty()),
        };
        let endpoint = get_config("endpoint")
            .map(|url| url.trim().trim_end_matches('/').to_string())
            .filter(|url| !url.is_empty());
        Ok(Self {
            // Every request names its full URL; the base is not used.
            http: ApiClient::new("", api::error_reason),
            credentials,
            endpoint,
        })
    }

    /// The endpoint of `region`: the configured one, else `https://ec2.<region>.amazonaws.com`.
    pub fn endpoint(&self, region: &str) -> String {
        match &self.endpoint {
            Some(url) => url.clone(),
            None => format!("https://ec2.{region}.amazonaws.com"),
        }
    }

    /// Calls `params`' action in `region`; the answer's XML on a 2xx, else the mapped
    /// error.
    pub async fn call(
        &self,
        region: &str,
        params: &Params,
        verb: Verb,
    ) -> Result<String, ProviderError> {
        let request = prepare(
            &self.credentials,
            &self.endpoint(region),
            region,
            params,
            verb,
            SystemTime::now(),
        )?;
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        // Signed once: a resend (after a dropped connection) carries the same signature,
        // valid for the five minutes EC2 allows.
        let response = self
            .http
            .send_raw(
                request.method.clone(),
                &request.url,
                request.body.as_ref().map(|_| FORM),
                request.body,
                &headers,
            )
            .await?;
        if (200..300).contains(&response.status) {
            return Ok(response.body);
        }
        Err(self.error(
            &request.method,
            &request.url,
            params.action(),
            region,
            &response,
        ))
    }

    /// The error for a non-2xx answer: by EC2's error code when the body has one, else by
    /// the HTTP status (the SDK's mapping).
    fn error(
        &self,
        method: &Method,
        url: &str,
        action: &str,
        region: &str,
        response: &ApiResponse,
    ) -> ProviderError {
        let (class, reason) = match api::error(&response.body) {
            Some(answer) => {
                let class = classify(&answer, response.status);
                (class, shown_reason(&answer, class))
            }
            None => (
                status_only(response.status),
                format!(
                    "an answer without EC2's error XML: {}",
                    response.body.chars().take(200).collect::<String>()
                ),
            ),
        };
        let detail = redact_urls(&format!(
            "{action} in {region} ({method} {}) -> {}: {reason}",
            path_of(url),
            response.status,
        ));
        match class {
            Class::RateLimited => ProviderError::RateLimited(retry_after_ms(&response.headers)),
            Class::Transient => ProviderError::Transient(detail),
            Class::NoCapacity => ProviderError::NoCapacity(detail),
            Class::QuotaExceeded => ProviderError::QuotaExceeded(detail),
            Class::Unauthorized => ProviderError::Unauthorized(detail),
            Class::NotFound => ProviderError::NotFound(detail),
            Class::InvalidRequest => ProviderError::InvalidRequest(detail),
            Class::Internal => ProviderError::Internal(detail),
        }
    }
}

/// One signed request, ready to send. Its `Debug` names the headers without their values:
/// they hold the signature and any session token.
pub struct Prepared {
    /// GET for [`Verb::Read`], POST for [`Verb::Write`].
    pub method: Method,
    /// The endpoint's `/`, with the parameters as its query for a GET.
    pub url: String,
    /// The form body of a POST (its content type is [`FORM`]).
    pub body: Option<Vec<u8>>,
    /// The headers to send besides the content type and length: `accept`,
    /// `x-amz-content-sha256` and the signature's (`x-amz-date`, `x-amz-security-token`,
    /// `authorization`).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Prepared")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("body_bytes", &self.body.as_ref().map(Vec::len))
            .field("headers", &names)
            .finish()
    }
}

/// `params` as a request to `endpoint` for `region`, signed with `credentials` at `time`
/// (service `ec2`).
pub fn prepare(
    credentials: &Credentials,
    endpoint: &str,
    region: &str,
    params: &Params,
    verb: Verb,
    time: SystemTime,
) -> Result<Prepared, ProviderError> {
    let encoded = params.encode();
    let (method, url, body) = match verb {
        Verb::Read => (Method::GET, format!("{endpoint}/?{encoded}"), None),
        Verb::Write => (
            Method::POST,
            format!("{endpoint}/"),
            Some(encoded.into_bytes()),
        ),
    };
    // The payload's hash, signed as a header too: AWS takes it on any service, and moto
    // (the fake of EC2 the tests use) checks a GET's signature only with it (it hashes the
    // parsed query as if it were the body otherwise).
    let payload_sha256 = hex_sha256(body.as_deref().unwrap_or_default());
    let mut signed: Vec<(&str, &str)> = vec![("x-amz-content-sha256", payload_sha256.as_str())];
    if body.is_some() {
        signed.push(("content-type", FORM));
    }
    let signature = sigv4::sign(
        credentials,
        region,
        "ec2",
        method.as_str(),
        &url,
        &signed,
        body.as_deref().unwrap_or_default(),
        time,
    )
    .map_err(|e| {
        let detail = format!("{} in {region}: {e}", params.action());
        match e {
            // Keys that cannot even sign (empty, malformed): the operator's to fix.
            SigningError::InvalidCredentials(_) => ProviderError::Unauthorized(detail),
            _ => ProviderError::Internal(detail),
        }
    })?;
    let mut headers = vec![
        ("accept".to_string(), "text/xml".to_string()),
        ("x-amz-content-sha256".to_string(), payload_sha256),
    ];
    headers.extend(signature);
    Ok(Prepared {
        method,
        url,
        body,
        headers,
    })
}

/// The hex SHA-256 of `bytes`.
fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What an EC2 error answer means, as a [`ProviderError`] case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    RateLimited,
    Transient,
    /// EC2 cannot place the request where it was asked, now (no-capacity).
    NoCapacity,
    QuotaExceeded,
    Unauthorized,
    NotFound,
    InvalidRequest,
    Internal,
}

/// Codes saying EC2 throttled the account.
const THROTTLED: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
];

/// Codes saying EC2 cannot place the request where it was asked, now: its capacity (of the
/// zone, the region, the Outpost), not the account's limits. Any other code of the
/// `Insufficient...Capacity...` family is read as one too ([`is_capacity`]).
const CAPACITY: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "InsufficientCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientAddressCapacity",
    "InsufficientVolumeCapacity",
    "InsufficientCapacityOnOutpost",
];

/// Codes of failures that pass: EC2's own faults.
const PASSING: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
];

/// Codes of an account limit reached.
const QUOTA: &[&str] = &[
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "ResourceLimitExceeded",
    "MaxSpotInstanceCountExceeded",
];

/// Codes of credentials or permissions refused (checked before `Invalid*`:
/// `InvalidClientTokenId` is a credential, not a request, problem).
const REFUSED: &[&str] = &[
    "AuthFailure",
    "UnauthorizedOperation",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "RequestExpired",
    "OptInRequired",
    "PendingVerification",
    "Blocked",
];

/// The meaning of an EC2 error answer with HTTP `status`: by its code first (see the
/// module doc), then by the status.
pub fn classify(answer: &ErrorAnswer, status: u16) -> Class {
    let code = answer.code.as_str();
    if THROTTLED.contains(&code) {
        Class::RateLimited
    } else if is_capacity(code) {
        Class::NoCapacity
    } else if PASSING.contains(&code)
        // The account's own shortages (`InsufficientFreeAddressesInSubnet`): they pass as
        // its other servers go.
        || code.starts_with("Insufficient")
        // The ClientToken's instance exists, made with other parameters (a newer image of
        // the same name): the retry's look-up adopts it.
        || code == "IdempotentParameterMismatch"
    {
        Class::Transient
    } else if QUOTA.contains(&code) || code.ends_with("LimitExceeded") {
        Class::QuotaExceeded
    } else if REFUSED.contains(&code) {
        Class::Unauthorized
    } else if code == "InvalidInstanceID.NotFound" {
        Class::NotFound
    } else if code.starts_with("Invalid")
        || code.starts_with("Missing")
        || code.starts_with("Unknown")
        || code.starts_with("Unsupported")
    {
        // The order named something EC2 does not have (an image, a subnet) or cannot take.
        Class::InvalidRequest
    } else {
        match status {
            401 | 403 => Class::Unauthorized,
            404 => Class::NotFound,
            429 => Class::RateLimited,
            400 | 409 | 422 => Class::InvalidRequest,
            500..=599 => Class::Transient,
            _ => Class::Internal,
        }
    }
}

/// `code` says EC2 is out of capacity for the request: one of [`CAPACITY`], or another code
/// of the `Insufficient...Capacity...` family. `InsufficientFreeAddressesInSubnet` is not
/// (the account's subnet is full, not EC2), nor is `Unsupported` (an instance type the zone
/// does not offer at all: no retry helps).
pub fn is_capacity(code: &str) -> bool {
    CAPACITY.contains(&code) || (code.starts_with("Insufficient") && code.contains("Capacity"))
}

/// The meaning of an answer without EC2's error XML, by its status alone. It is not EC2's
/// (a wrong `endpoint`, a proxy's or load balancer's page), so a 404 says nothing of the
/// instance: never not-found, or a delete would record a live instance as gone.
pub fn status_only(status: u16) -> Class {
    match status {
        401 | 403 => Class::Unauthorized,
        429 => Class::RateLimited,
        500..=599 => Class::Transient,
        _ => Class::Internal,
    }
}

/// What a tenant's fault shows of an error answer: code, message and request id, except for
/// a refused credential, whose message names the operator's account and IAM user (the code
/// and request id say enough; the operator reads the rest in CloudTrail).
pub fn shown_reason(answer: &ErrorAnswer, class: Class) -> String {
    match (class, &answer.request_id) {
        (Class::Unauthorized, Some(id)) => format!("{} (request id {id})", answer.code),
        (Class::Unauthorized, None) => answer.code.clone(),
        _ => answer.reason(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: &str) -> ErrorAnswer {
        ErrorAnswer {
            code: code.into(),
            message: "m".into(),
            request_id: Some("r".into()),
        }
    }

    fn credentials(session_token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: session_token.map(String::from),
        }
    }

    fn header<'a>(request: &'a Prepared, name: &str) -> &'a str {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {:?}", request.headers))
    }

    /// 2015-08-30T12:36:00Z.
    fn at() -> SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160)
    }

    /// A read goes as a GET with the parameters in the query and no body, signed as
    /// botocore (AWS's Python SDK, which moto checks with) signs it: the expected
    /// signature was computed with `botocore.auth.SigV4Auth` for the same request.
    #[test]
    fn a_read_is_a_signed_get() {
        let mut params = Params::new("DescribeInstances");
        params
            .filter(
                "tag:provisioner-idempotency-key",
                &[&crate::query::literal("order 1*")],
            )
            .add("MaxResults", "5");
        let request = prepare(
            &credentials(None),
            "https://ec2.eu-west-1.amazonaws.com",
            "eu-west-1",
            &params,
            Verb::Read,
            at(),
        )
        .unwrap();
        assert_eq!(request.method, Method::GET);
        assert_eq!(
            request.url,
            "https://ec2.eu-west-1.amazonaws.com/?Action=DescribeInstances&Version=2016-11-15\
             &Filter.1.Name=tag%3Aprovisioner-idempotency-key&Filter.1.Value.1=order%201%5C%2A\
             &MaxResults=5"
        );
        assert_eq!(request.body, None);
        assert_eq!(header(&request, "accept"), "text/xml");
        assert_eq!(
            header(&request, "x-amz-content-sha256"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(header(&request, "x-amz-date"), "20150830T123600Z");
        assert_eq!(
            header(&request, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/ec2/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=310d674fa4891e98f4c8de2371d226f14ee147c59a5828f6543f22e7bdbb5878"
        );
    }

    /// A write goes as a POST of the form, its content type and the session token signed
    /// (the signature again botocore's for the same request).
    #[test]
    fn a_write_is_a_signed_form_post() {
        let mut params = Params::new("RunInstances");
        params
            .add("ImageId", "ami-1e749f67")
            .add("UserData", "I2Nsb3VkLWNvbmZpZwo+/=")
            .add("TagSpecification.1.Tag.1.Value", "café");
        let request = prepare(
            &credentials(Some("session/token+==")),
            "http://127.0.0.1:5000",
            "eu-west-1",
            &params,
            Verb::Write,
            at(),
        )
        .unwrap();
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.url, "http://127.0.0.1:5000/");
        assert_eq!(
            String::from_utf8(request.body.clone().unwrap()).unwrap(),
            "Action=RunInstances&Version=2016-11-15&ImageId=ami-1e749f67\
             &UserData=I2Nsb3VkLWNvbmZpZwo%2B%2F%3D&TagSpecification.1.Tag.1.Value=caf%C3%A9"
        );
        assert_eq!(header(&request, "x-amz-security-token"), "session/token+==");
        assert_eq!(
            header(&request, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/ec2/aws4_request, \
             SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;\
             x-amz-security-token, \
             Signature=5ea54d2b3db8b9b8377542819c47464be0f48518e356f62c86dc97f55be1606f"
        );
    }

    /// Keys that cannot sign are the operator's to fix: unauthorized, naming no secret.
    #[test]
    fn unusable_keys_are_unauthorized() {
        let mut empty = credentials(None);
        empty.secret_access_key.clear();
        let error = prepare(
            &empty,
            "https://ec2.us-east-1.amazonaws.com",
            "us-east-1",
            &Params::new("DescribeInstances"),
            Verb::Read,
            at(),
        )
        .unwrap_err();
        assert!(matches!(error, ProviderError::Unauthorized(_)), "{error:?}");
    }

    /// The code decides before the status: throttling at 503 is rate-limited, an unknown
    /// instance at 400 is not-found, a quota at 400 is quota-exceeded.
    #[test]
    fn codes_decide_before_statuses() {
        let of = |code: &str, status: u16| classify(&answer(code), status);
        assert_eq!(of("RequestLimitExceeded", 503), Class::RateLimited);
        assert_eq!(of("Throttling", 400), Class::RateLimited);
        assert_eq!(of("InsufficientInstanceCapacity", 500), Class::NoCapacity);
        assert_eq!(of("InsufficientInstanceCapacity", 400), Class::NoCapacity);
        assert_eq!(of("InstanceLimitExceeded", 400), Class::QuotaExceeded);
        assert_eq!(of("VcpuLimitExceeded", 400), Class::QuotaExceeded);
        assert_eq!(of("AuthFailure", 401), Class::Unauthorized);
        assert_eq!(of("UnauthorizedOperation", 403), Class::Unauthorized);
        assert_eq!(of("InvalidClientTokenId", 400), Class::Unauthorized);
        assert_eq!(of("SignatureDoesNotMatch", 403), Class::Unauthorized);
        assert_eq!(of("OptInRequired", 401), Class::Unauthorized);
        assert_eq!(of("InvalidInstanceID.NotFound", 400), Class::NotFound);
        assert_eq!(
            of("InvalidInstanceID.Malformed", 400),
            Class::InvalidRequest
        );
        assert_eq!(of("InvalidAMIID.NotFound", 400), Class::InvalidRequest);
        assert_eq!(of("InvalidParameterValue", 400), Class::InvalidRequest);
        assert_eq!(of("MissingParameter", 400), Class::InvalidRequest);
        // The ClientToken's instance exists (made with other parameters: a newer image of
        // the same name): the retry's look-up finds it, so the order must not fail.
        assert_eq!(of("IdempotentParameterMismatch", 400), Class::Transient);
    }

    /// Every capacity shortage is no-capacity and every account limit a quota, whatever its
    /// name; the account's full subnet passes (transient).
    #[test]
    fn capacity_and_limit_families_are_read_by_their_names() {
        let of = |code: &str| classify(&answer(code), 400);
        assert_eq!(of("InsufficientFreeAddressesInSubnet"), Class::Transient);
        assert_eq!(of("InsufficientAddressCapacity"), Class::NoCapacity);
        assert_eq!(
            of("InsufficientReservedInstanceCapacity"),
            Class::NoCapacity
        );
        assert_eq!(of("InsufficientCapacityOnOutpost"), Class::NoCapacity);
        assert_eq!(of("InsufficientGpuCapacity"), Class::NoCapacity);
        assert_eq!(of("VolumeLimitExceeded"), Class::QuotaExceeded);
        assert_eq!(of("AddressLimitExceeded"), Class::QuotaExceeded);
        assert_eq!(of("MaxIOPSLimitExceeded"), Class::QuotaExceeded);
        assert_eq!(
            classify(&answer("RequestLimitExceeded"), 400),
            Class::RateLimited
        );
    }

    /// EC2's capacity codes are no-capacity at whatever status they come with (EC2's server
    /// errors are 500s, `InsufficientCapacityOnOutpost` a 400), with EC2's code and message;
    /// EC2's own faults and a mismatched client token stay transient; `Unsupported` (an
    /// instance type the zone does not offer at all) is a bad request, not a shortage.
    #[test]
    fn capacity_shortages_are_no_capacity() {
        for code in CAPACITY {
            for status in [400, 500, 503] {
                assert_eq!(
                    classify(&answer(code), status),
                    Class::NoCapacity,
                    "{code} {status}"
                );
            }
        }
        for code in PASSING {
            assert_eq!(classify(&answer(code), 500), Class::Transient, "{code}");
        }
        assert_eq!(
            classify(&answer("IdempotentParameterMismatch"), 400),
            Class::Transient
        );
        assert_eq!(classify(&answer("Unsupported"), 400), Class::InvalidRequest);
        assert_eq!(
            classify(&answer("UnsupportedOperation"), 400),
            Class::InvalidRequest
        );
        assert!(!is_capacity("InsufficientFreeAddressesInSubnet"));
        assert!(!is_capacity("InstanceLimitExceeded"));
        let shortage = answer("InsufficientInstanceCapacity");
        assert_eq!(
            shown_reason(&shortage, Class::NoCapacity),
            shortage.reason(),
            "a shortage shows EC2's code and message"
        );
    }

    /// An answer without EC2's error XML is not EC2's: a 404 there (a wrong `endpoint`, a
    /// proxy's page) says nothing of the instance, so it is never not-found (a delete would
    /// record a live instance as gone).
    #[test]
    fn answers_without_an_ec2_code_are_never_not_found() {
        assert_eq!(status_only(404), Class::Internal);
        assert_eq!(status_only(400), Class::Internal);
        assert_eq!(status_only(401), Class::Unauthorized);
        assert_eq!(status_only(403), Class::Unauthorized);
        assert_eq!(status_only(429), Class::RateLimited);
        assert_eq!(status_only(500), Class::Transient);
        assert_eq!(status_only(503), Class::Transient);
    }

    /// A refused credential's message names the operator's account and IAM user: the
    /// tenant's fault shows the code and request id only.
    #[test]
    fn refusals_do_not_show_the_account() {
        let refused = ErrorAnswer {
            code: "UnauthorizedOperation".into(),
            message: "You are not authorized to perform this operation. User: \
                      arn:aws:iam::123456789012:user/provisioner is not authorized"
                .into(),
            request_id: Some("r-1".into()),
        };
        let shown = shown_reason(&refused, Class::Unauthorized);
        assert!(!shown.contains("123456789012"), "{shown}");
        assert!(
            shown.contains("UnauthorizedOperation") && shown.contains("r-1"),
            "{shown}"
        );
        let invalid = answer("InvalidAMIID.NotFound");
        assert_eq!(
            shown_reason(&invalid, Class::InvalidRequest),
            invalid.reason()
        );
    }

    /// An unknown code falls back on the HTTP status.
    #[test]
    fn unknown_codes_follow_the_status() {
        let of = |status: u16| classify(&answer("SomethingNew"), status);
        assert_eq!(of(500), Class::Transient);
        assert_eq!(of(503), Class::Transient);
        assert_eq!(of(400), Class::InvalidRequest);
        assert_eq!(of(403), Class::Unauthorized);
        assert_eq!(of(429), Class::RateLimited);
        assert_eq!(of(302), Class::Internal);
    }
}
