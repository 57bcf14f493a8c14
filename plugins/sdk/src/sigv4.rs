//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`), header form: signs one HTTP request the
//! way EC2's Query API (and every other non-S3 AWS-style API) checks it.
//!
//! [`sign`] takes the request as it will be sent (method, full URL, the headers to sign,
//! the body) and answers the headers to add: `x-amz-date`, `x-amz-security-token` when the
//! [`Credentials`] carry a session token, and `authorization`. The steps are AWS's:
//! [`canonical_request`] -> [`string_to_sign`] -> [`signing_key`] -> HMAC-SHA256 of the
//! string to sign with that key. Each step is public, so a test (or a puzzled plugin
//! author comparing with AWS's `SignatureDoesNotMatch` answer, which quotes AWS's own
//! canonical request and string to sign) can see every stage: [`sign_with_details`].
//!
//! # What is signed
//! - the method, as given;
//! - the canonical URI: the URL's path as it goes on the wire, dot segments removed and
//!   runs of slashes collapsed (RFC 3986 section 5.2.4 plus AWS's rule), then every byte
//!   but `A-Z a-z 0-9 - _ . ~ /` percent-encoded. The wire path is already encoded once, so
//!   a `%20` in it is signed as `%2520`: the double encoding every service but S3 expects;
//! - the canonical query: each `name=value` of the URL's query decoded (`+` is a space, as
//!   in forms, so a literal plus must go on the wire as `%2B`), encoded again with RFC 3986's
//!   unreserved set, sorted by name then value; a name without `=` gets an empty value;
//! - `host`, from the URL's authority exactly as written (port included when the URL has
//!   one), unless `headers` names it; wasi:http sends the authority verbatim as `Host`, so
//!   this is the value AWS sees;
//! - `x-amz-date`, `x-amz-security-token` (when set) and every header in `headers`: names
//!   lowercased and sorted, values trimmed with runs of spaces collapsed to one, the values
//!   of a repeated name joined with `,` in the order given;
//! - the hex SHA-256 of the body (of nothing for a body-less request).
//!
//! # What it deliberately does not do
//! - **S3**: S3 wants the path encoded once and not normalised, an `x-amz-content-sha256`
//!   header, and often `UNSIGNED-PAYLOAD`. None of that is here; signing for S3 with this
//!   module fails on any key that needs encoding or holds `//`, `.` or `..`.
//! - **Chunked (streaming) signing** (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, aws-chunked
//!   bodies) and event-stream signing: the whole body is hashed at once.
//! - **Presigned URLs** (the signature in the query string, `X-Amz-Signature`).
//! - **SigV4a** (ECDSA, multi-region) and the older signature versions.
//! - **An unsigned session token**: the few services that want `X-Amz-Security-Token`
//!   added after signing are served by signing without the token and adding the header.
//! - **Clock skew**: the caller passes the time (`SystemTime::now()` in a plugin, the wasi
//!   wall clock); AWS refuses a request more than 5 minutes off (`RequestTimeTooSkewed`).
//!
//! # Example
//! ```
//! use provider_sdk::sigv4::{Credentials, sign};
//!
//! let credentials = Credentials {
//!     access_key_id: "AKIDEXAMPLE".into(),
//!     secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
//!     session_token: None,
//! };
//! let body = b"Action=DescribeInstances&Version=2016-11-15";
//! let content_type = "application/x-www-form-urlencoded; charset=utf-8";
//! let added = sign(
//!     &credentials,
//!     "us-east-1",
//!     "ec2",
//!     "POST",
//!     "https://ec2.us-east-1.amazonaws.com/",
//!     &[("content-type", content_type)],
//!     body,
//!     std::time::SystemTime::now(),
//! )?;
//! // Send the request with `content-type` and every header in `added`.
//! let names: Vec<&str> = added.iter().map(|(name, _)| name.as_str()).collect();
//! assert_eq!(names, ["x-amz-date", "authorization"]);
//! # Ok::<(), provider_sdk::sigv4::SigningError>(())
//! ```

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The algorithm name that opens the string to sign and the `authorization` header.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Headers [`sign`] writes itself; one of them in the caller's `headers` is an error.
const RESERVED_HEADERS: [&str; 3] = ["authorization", "x-amz-date", "x-amz-security-token"];

/// The last second `x-amz-date` can spell (9999-12-31T23:59:59Z): its year has four digits.
const LAST_SECOND: u64 = 253_402_300_799;

/// AWS credentials: from the manifest's secrets.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The session token of temporary credentials (STS); sent and signed as
    /// `x-amz-security-token`.
    pub session_token: Option<String>,
}

/// Shows the access key id (an identifier AWS itself logs) and hides the secret and the
/// session token, so a `{:?}` in a log line or a panic never leaks them.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why a request could not be signed. The messages name no URL and no secret: they may
/// reach the tenant inside a `ProviderError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningError {
    /// The URL is not an absolute `http(s)://authority/path?query` this module can sign;
    /// the string says what is wrong with it.
    InvalidUrl(&'static str),
    /// The method is empty or not an HTTP token.
    InvalidMethod,
    /// A header name that is not an HTTP token, or a value holding CR, LF or NUL (which
    /// cannot be sent).
    InvalidHeader { name: String, reason: &'static str },
    /// A header the signer writes itself (`authorization`, `x-amz-date`,
    /// `x-amz-security-token`: the last comes from [`Credentials::session_token`]).
    ReservedHeader(String),
    /// The region or the service is empty or holds a character the credential scope
    /// cannot carry (`/`, `,`, whitespace, control or non-ASCII characters).
    InvalidScope { part: &'static str },
    /// The credentials are incomplete or malformed; the string names the part.
    InvalidCredentials(&'static str),
    /// The time is before 1970 or after 9999, which `x-amz-date` cannot spell.
    TimeOutOfRange,
}

impl fmt::Display for SigningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(reason) => write!(f, "cannot sign the request: the URL {reason}"),
            Self::InvalidMethod => {
                write!(
                    f,
                    "cannot sign the request: the method is not an HTTP token"
                )
            }
            Self::InvalidHeader { name, reason } => {
                write!(f, "cannot sign the request: header '{name}' {reason}")
            }
            Self::ReservedHeader(name) => write!(
                f,
                "cannot sign the request: header '{name}' is written by the signer (a session \
                 token goes in the credentials)"
            ),
            Self::InvalidScope { part } => write!(
                f,
                "cannot sign the request: the {part} is empty or holds a character a \
                 credential scope cannot carry"
            ),
            Self::InvalidCredentials(what) => {
                write!(f, "cannot sign the request: the AWS credentials' {what}")
            }
            Self::TimeOutOfRange => write!(
                f,
                "cannot sign the request: the clock is outside 1970..=9999, which x-amz-date \
                 cannot spell"
            ),
        }
    }
}

impl std::error::Error for SigningError {}

/// Task 1's result: the canonical request and the `SignedHeaders` list it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    /// The canonical request, lines joined with `\n`, no trailing newline.
    pub text: String,
    /// The signed header names, lowercased, sorted, joined with `;`.
    pub signed_headers: String,
}

/// Every stage of one signature, for tests and for comparing with the canonical request
/// and string to sign that AWS quotes in a `SignatureDoesNotMatch` answer. No `Debug`:
/// the canonical request and the headers carry the session token.
pub struct Signed {
    pub canonical_request: CanonicalRequest,
    pub string_to_sign: String,
    /// The hex signature, as in the `authorization` header.
    pub signature: String,
    /// What [`sign`] answers: the headers to add to the request.
    pub headers: Vec<(String, String)>,
}

/// Signs one request. `url` is the full URL (`scheme://host[:port]/path?query`) exactly as it
/// will be sent; `headers` the headers that will be sent (name, value) — at least the ones
/// to sign (content-type etc.); the `host` header is derived from the URL's authority (as
/// written: wasi:http sends it verbatim) unless present in `headers`.
///
/// Returns the headers to ADD to the request: `x-amz-date`, `x-amz-security-token` (when a
/// session token is set), and `authorization` (`AWS4-HMAC-SHA256 Credential=...,
/// SignedHeaders=..., Signature=...`).
#[allow(clippy::too_many_arguments)] // The request's parts, as the plugins code against them.
pub fn sign(
    credentials: &Credentials,
    region: &str,
    service: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, SigningError> {
    sign_with_details(
        credentials,
        region,
        service,
        method,
        url,
        headers,
        body,
        time,
    )
    .map(|signed| signed.headers)
}

/// [`sign`], answering every stage of the signature as well as the headers to add.
#[allow(clippy::too_many_arguments)] // The same parts as `sign`.
pub fn sign_with_details(
    credentials: &Credentials,
    region: &str,
    service: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Signed, SigningError> {
    check_credentials(credentials)?;
    check_scope_part(region, "region")?;
    check_scope_part(service, "service")?;
    if let Some((name, _)) = headers
        .iter()
        .find(|(name, _)| RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()))
    {
        return Err(SigningError::ReservedHeader(name.to_ascii_lowercase()));
    }

    let amz_date = amz_date(time)?;
    let date = &amz_date[..8];
    let mut signed_headers: Vec<(&str, &str)> = headers.to_vec();
    signed_headers.push(("x-amz-date", &amz_date));
    if let Some(token) = &credentials.session_token {
        signed_headers.push(("x-amz-security-token", token));
    }

    let canonical_request = canonical_request(method, url, &signed_headers, &sha256_hex(body))?;
    let scope = credential_scope(date, region, service);
    let string_to_sign = string_to_sign(&amz_date, &scope, &canonical_request.text);
    let key = signing_key(&credentials.secret_access_key, date, region, service);
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));

    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
        credentials.access_key_id, canonical_request.signed_headers
    );
    let mut added = vec![("x-amz-date".to_string(), amz_date.clone())];
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token".to_string(), token.clone()));
    }
    added.push(("authorization".to_string(), authorization));
    Ok(Signed {
        canonical_request,
        string_to_sign,
        signature,
        headers: added,
    })
}

/// The canonical request (task 1) of `method url` with `headers`, every one of them
/// signed: unlike [`sign`], the caller passes `x-amz-date` (and `x-amz-security-token`)
/// here itself. `host` is added from the URL's authority unless `headers` has it.
/// `payload_sha256` is the body's hex SHA-256 ([`sha256_hex`]).
pub fn canonical_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    payload_sha256: &str,
) -> Result<CanonicalRequest, SigningError> {
    if !is_token(method) {
        return Err(SigningError::InvalidMethod);
    }
    let url = Url::parse(url)?;

    let mut entries = Vec::with_capacity(headers.len() + 1);
    for (name, value) in headers {
        if !is_token(name) {
            return Err(SigningError::InvalidHeader {
                name: name.escape_default().to_string(),
                reason: "is not an HTTP token",
            });
        }
        if value.contains(['\r', '\n', '\0']) {
            return Err(SigningError::InvalidHeader {
                name: name.to_ascii_lowercase(),
                reason: "has a CR, LF or NUL in its value",
            });
        }
        entries.push((name.to_ascii_lowercase(), trim_all(value)));
    }
    if !entries.iter().any(|(name, _)| name == "host") {
        entries.push(("host".to_string(), url.authority.to_string()));
    }
    // Stable: a repeated header's values keep the order they are sent in.
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let mut canonical_headers = String::new();
    let mut names: Vec<&str> = Vec::new();
    for (name, value) in &entries {
        if names.last() == Some(&name.as_str()) {
            canonical_headers.pop(); // the previous value's newline
            canonical_headers.push(',');
        } else {
            names.push(name);
            canonical_headers.push_str(name);
            canonical_headers.push(':');
        }
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }
    let signed_headers = names.join(";");

    let text = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_sha256}",
        canonical_uri(url.path),
        canonical_query(url.query)?,
    );
    Ok(CanonicalRequest {
        text,
        signed_headers,
    })
}

/// The string to sign (task 2): the algorithm, the request's `x-amz-date`, the credential
/// scope and the hex SHA-256 of the canonical request.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The credential scope: `date/region/service/aws4_request`, `date` as `YYYYMMDD`.
pub fn credential_scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// The signing key (task 3): the secret, HMAC-chained through the date (`YYYYMMDD`), the
/// region, the service and `aws4_request`.
pub fn signing_key(secret_access_key: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(
        format!("AWS4{secret_access_key}").as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// `time` as `x-amz-date` spells it: `YYYYMMDD'T'HHMMSS'Z'` in UTC, seconds truncated.
pub fn amz_date(time: SystemTime) -> Result<String, SigningError> {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| SigningError::TimeOutOfRange)?
        .as_secs();
    if seconds > LAST_SECOND {
        return Err(SigningError::TimeOutOfRange);
    }
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let second_of_day = seconds % 86_400;
    Ok(format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    ))
}

/// Lowercase hex SHA-256 of `bytes`: the payload hash of the canonical request.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch). Eras are 400-year cycles starting
/// on 0000-03-01, so the leap day falls at the end of each shifted year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days from 0000-03-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097; // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11], 0 = March
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The parts of a URL that are signed.
struct Url<'a> {
    authority: &'a str,
    path: &'a str,
    query: &'a str,
}

impl<'a> Url<'a> {
    fn parse(url: &'a str) -> Result<Self, SigningError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or(SigningError::InvalidUrl("is not absolute (no scheme://)"))?;
        if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
            return Err(SigningError::InvalidUrl("is neither http nor https"));
        }
        if rest.contains('#') {
            return Err(SigningError::InvalidUrl(
                "has a fragment, which is never sent and so cannot be signed",
            ));
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        if authority.is_empty() {
            return Err(SigningError::InvalidUrl("has no host"));
        }
        if authority.contains('@') {
            return Err(SigningError::InvalidUrl(
                "carries user information, which wasi:http cannot send",
            ));
        }
        if !authority.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SigningError::InvalidUrl(
                "has a host with spaces, control or non-ASCII characters",
            ));
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Ok(Self {
            authority,
            path,
            query,
        })
    }
}

/// The canonical URI: `path` normalised (dot segments removed, runs of slashes collapsed)
/// and every byte but the unreserved ones and `/` percent-encoded. `path` is the wire form,
/// so this is the second encoding non-S3 services expect.
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    // `/a/`, `/a/.` and `/a/b/..` all name a directory: the result ends with a slash.
    let directory = matches!(path.rsplit('/').next(), Some("" | "." | ".."));
    let mut normalised = String::with_capacity(path.len() + 1);
    for segment in &segments {
        normalised.push('/');
        normalised.push_str(segment);
    }
    if segments.is_empty() || directory {
        normalised.push('/');
    }
    uri_encode(normalised.as_bytes(), true)
}

/// The canonical query: each parameter decoded and encoded again, sorted by encoded name
/// then encoded value, joined with `&`; a name without `=` gets an empty value.
fn canonical_query(query: &str) -> Result<String, SigningError> {
    let mut parameters = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        parameters.push((
            uri_encode(&query_decode(name)?, false),
            uri_encode(&query_decode(value)?, false),
        ));
    }
    parameters.sort();
    Ok(parameters
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&"))
}

/// One query name or value decoded: `%XX` escapes, and `+` as a space (form encoding, as
/// AWS's query services read it).
fn query_decode(text: &str) -> Result<Vec<u8>, SigningError> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let high = bytes.get(index + 1).and_then(|b| hex_value(*b));
                let low = bytes.get(index + 2).and_then(|b| hex_value(*b));
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(SigningError::InvalidUrl(
                        "has a '%' in its query that is not a %XX escape",
                    ));
                };
                decoded.push(high << 4 | low);
                index += 3;
            }
            b'+' => {
                decoded.push(b' ');
                index += 1;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    Ok(decoded)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// SigV4's URI encoding: RFC 3986's unreserved characters stay, every other byte becomes
/// `%XX` (uppercase hex); `/` stays too when `keep_slash`.
fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = String::with_capacity(bytes.len() * 3);
    for &byte in bytes {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && byte == b'/')
        {
            encoded.push(char::from(byte));
        } else {
            encoded.push('%');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    encoded
}

/// A header value as signed: spaces and tabs trimmed from both ends (HTTP drops them on
/// the way), and each run of spaces inside collapsed to one.
fn trim_all(value: &str) -> String {
    let mut trimmed = String::with_capacity(value.len());
    for c in value.trim_matches([' ', '\t']).chars() {
        if c == ' ' && trimmed.ends_with(' ') {
            continue;
        }
        trimmed.push(c);
    }
    trimmed
}

/// `text` is an HTTP token (RFC 9110 section 5.6.2): what a method or a header name is.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_scope_part(part: &str, what: &'static str) -> Result<(), SigningError> {
    let fits = !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b',');
    if fits {
        Ok(())
    } else {
        Err(SigningError::InvalidScope { part: what })
    }
}

fn check_credentials(credentials: &Credentials) -> Result<(), SigningError> {
    let key_id = &credentials.access_key_id;
    if key_id.is_empty() {
        return Err(SigningError::InvalidCredentials("access key id is empty"));
    }
    if !key_id
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'/' && b != b',')
    {
        return Err(SigningError::InvalidCredentials(
            "access key id holds a character a credential cannot carry",
        ));
    }
    if credentials.secret_access_key.is_empty() {
        return Err(SigningError::InvalidCredentials(
            "secret access key is empty",
        ));
    }
    match credentials.session_token.as_deref() {
        Some("") => Err(SigningError::InvalidCredentials(
            "session token is empty (leave it unset instead)",
        )),
        Some(token) if token.contains(['\r', '\n', '\0']) => Err(SigningError::InvalidCredentials(
            "session token holds a CR, LF or NUL",
        )),
        _ => Ok(()),
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    /// `x-amz-date` is right on known instants (values from `date -u -d ... +%s`),
    /// leap days and century years included.
    #[test]
    fn amz_date_spells_known_instants() {
        for (seconds, expected) in [
            (0, "19700101T000000Z"),
            (1_440_938_160, "20150830T123600Z"), // the test suite's instant
            (94_694_399, "19721231T235959Z"),    // end of the first leap year after 1970
            (951_868_799, "20000229T235959Z"),   // 2000: divisible by 400, a leap year
            (946_684_799, "19991231T235959Z"),
            (1_456_704_000, "20160229T000000Z"),
            (4_107_542_400, "21000301T000000Z"), // 2100: divisible by 100, no Feb 29
            (2_147_483_648, "20380119T031408Z"), // past i32 seconds
            (1_735_646_400, "20241231T120000Z"), // day 366 of a leap year
            (253_402_300_799, "99991231T235959Z"),
        ] {
            assert_eq!(amz_date(at(seconds)).unwrap(), expected, "{seconds}");
        }
    }

    /// Sub-second parts are cut, not rounded (AWS's own SDKs do the same).
    #[test]
    fn amz_date_truncates_fractions() {
        let time = at(1_440_938_160) + Duration::from_millis(999);
        assert_eq!(amz_date(time).unwrap(), "20150830T123600Z");
    }

    /// Every day from 1970 to 2500 follows its predecessor: no gaps, no repeats, months
    /// of the right lengths, February 29 exactly in leap years.
    #[test]
    fn civil_from_days_walks_the_calendar() {
        let mut previous = civil_from_days(0);
        assert_eq!(previous, (1970, 1, 1));
        for days in 1..=(530 * 366) {
            let date = civil_from_days(days);
            let (year, month, day) = previous;
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let length = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if day < length {
                (year, month, day + 1)
            } else if month < 12 {
                (year, month + 1, 1)
            } else {
                (year + 1, 1, 1)
            };
            assert_eq!(date, expected, "day {days}");
            previous = date;
        }
    }

    /// A time before 1970 or past 9999 is an error, not a malformed date.
    #[test]
    fn amz_date_refuses_times_it_cannot_spell() {
        assert_eq!(
            amz_date(UNIX_EPOCH - Duration::from_secs(1)),
            Err(SigningError::TimeOutOfRange)
        );
        assert_eq!(
            amz_date(at(LAST_SECOND + 1)),
            Err(SigningError::TimeOutOfRange)
        );
    }

    /// The signing key of AWS's documented example (secret of the test suite, 20120215,
    /// us-east-1, iam), also checked with `openssl dgst -mac HMAC`.
    #[test]
    fn signing_key_matches_the_documented_example() {
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex(&key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    fn host_line(url: &str, headers: &[(&str, &str)]) -> String {
        let request = canonical_request("GET", url, headers, &sha256_hex(b"")).unwrap();
        request
            .text
            .lines()
            .find(|line| line.starts_with("host:"))
            .unwrap()
            .to_string()
    }

    /// `host` is the URL's authority as written, port and all (wasi:http sends that as
    /// `Host`); a `host` in `headers` wins.
    #[test]
    fn host_comes_from_the_authority_unless_given() {
        assert_eq!(
            host_line("https://ec2.us-east-1.amazonaws.com/", &[]),
            "host:ec2.us-east-1.amazonaws.com"
        );
        assert_eq!(
            host_line("http://127.0.0.1:8090/aws?Action=X", &[]),
            "host:127.0.0.1:8090"
        );
        assert_eq!(
            host_line("https://example.com:443", &[]),
            "host:example.com:443"
        );
        assert_eq!(
            host_line("https://example.com/", &[("Host", "proxy.example")]),
            "host:proxy.example"
        );
    }

    /// The wire path is encoded once already; the canonical URI encodes it again.
    #[test]
    fn the_path_is_encoded_twice() {
        let request =
            canonical_request("GET", "https://h/a%20b/c:d", &[], &sha256_hex(b"")).unwrap();
        assert_eq!(request.text.lines().nth(1), Some("/a%2520b/c%3Ad"));
    }

    /// Query parameters are decoded before they are encoded again: an escape is not
    /// doubled, `+` is a space, a bare name has an empty value, empty pairs vanish.
    #[test]
    fn the_query_is_decoded_then_encoded() {
        let request = canonical_request(
            "GET",
            "https://h/?b=a%2Fb%3d&a=x+y&flag&&c=%7e",
            &[],
            &sha256_hex(b""),
        )
        .unwrap();
        assert_eq!(
            request.text.lines().nth(2),
            Some("a=x%20y&b=a%2Fb%3D&c=~&flag=")
        );
        assert_eq!(
            canonical_request("GET", "https://h/?a=%zz", &[], ""),
            Err(SigningError::InvalidUrl(
                "has a '%' in its query that is not a %XX escape"
            ))
        );
    }

    /// URLs that cannot be signed as they would be sent are refused with the reason.
    #[test]
    fn unsignable_urls_are_refused() {
        for url in [
            "ec2.amazonaws.com/",
            "ftp://ec2.amazonaws.com/",
            "https:///path",
            "https://user:pw@ec2.amazonaws.com/",
            "https://ec2.amazonaws.com/#top",
            "https://ec2 amazonaws.com/",
        ] {
            assert!(
                matches!(
                    canonical_request("GET", url, &[], ""),
                    Err(SigningError::InvalidUrl(_))
                ),
                "{url}"
            );
        }
    }

    /// The headers the signer writes cannot also come from the caller, in any case.
    #[test]
    fn reserved_headers_are_refused() {
        for name in ["X-Amz-Date", "authorization", "X-AMZ-SECURITY-TOKEN"] {
            let answer = sign(
                &credentials(),
                "us-east-1",
                "ec2",
                "GET",
                "https://ec2.us-east-1.amazonaws.com/",
                &[(name, "x")],
                b"",
                at(1_440_938_160),
            );
            assert_eq!(
                answer.err(),
                Some(SigningError::ReservedHeader(name.to_ascii_lowercase()))
            );
        }
    }

    /// Header names must be tokens and values sendable; the method must be a token.
    #[test]
    fn malformed_headers_and_methods_are_refused() {
        let url = "https://h/";
        assert!(matches!(
            canonical_request("GET", url, &[("my header", "v")], ""),
            Err(SigningError::InvalidHeader { .. })
        ));
        assert!(matches!(
            canonical_request("GET", url, &[("x", "a\r\nInjected: yes")], ""),
            Err(SigningError::InvalidHeader { .. })
        ));
        assert_eq!(
            canonical_request("GE T", url, &[], ""),
            Err(SigningError::InvalidMethod)
        );
    }

    /// Incomplete credentials and a scope that would corrupt `Credential=` are errors.
    #[test]
    fn bad_credentials_and_scopes_are_refused() {
        let sign_with = |credentials: &Credentials, region: &str, service: &str| {
            sign(
                credentials,
                region,
                service,
                "GET",
                "https://h/",
                &[],
                b"",
                at(1_440_938_160),
            )
            .err()
        };
        let mut empty_secret = credentials();
        empty_secret.secret_access_key.clear();
        assert!(matches!(
            sign_with(&empty_secret, "us-east-1", "ec2"),
            Some(SigningError::InvalidCredentials(_))
        ));
        let mut empty_token = credentials();
        empty_token.session_token = Some(String::new());
        assert!(matches!(
            sign_with(&empty_token, "us-east-1", "ec2"),
            Some(SigningError::InvalidCredentials(_))
        ));
        assert_eq!(
            sign_with(&credentials(), "us-east-1/x", "ec2"),
            Some(SigningError::InvalidScope { part: "region" })
        );
        assert_eq!(
            sign_with(&credentials(), "us-east-1", ""),
            Some(SigningError::InvalidScope { part: "service" })
        );
    }

    /// Printing credentials never shows the secret or the session token.
    #[test]
    fn debug_output_never_shows_a_secret() {
        let mut credentials = credentials();
        credentials.session_token = Some("session-token-value".into());
        for printed in [format!("{credentials:?}"), format!("{credentials:#?}")] {
            assert!(!printed.contains("wJalrXUtnFEMI"), "{printed}");
            assert!(!printed.contains("session-token-value"), "{printed}");
            assert!(printed.contains("AKIDEXAMPLE"), "{printed}");
        }
    }

    /// An EC2 Query API call (POST form) signs its content type and body; changing either
    /// changes the signature, and the answer adds exactly the three headers.
    #[test]
    fn an_ec2_query_call_signs_body_and_content_type() {
        let mut credentials = credentials();
        credentials.session_token = Some("token".into());
        let sign_body = |content_type: &str, body: &[u8]| {
            sign_with_details(
                &credentials,
                "eu-west-1",
                "ec2",
                "POST",
                "https://ec2.eu-west-1.amazonaws.com/",
                &[("Content-Type", content_type)],
                body,
                at(1_440_938_160),
            )
            .unwrap()
        };
        let form = "application/x-www-form-urlencoded; charset=utf-8";
        let signed = sign_body(form, b"Action=DescribeInstances&Version=2016-11-15");
        let names: Vec<&str> = signed.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["x-amz-date", "x-amz-security-token", "authorization"]
        );
        assert_eq!(
            signed.headers[2].1,
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/ec2/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, \
                 Signature={}",
                signed.signature
            )
        );
        let other_body = sign_body(form, b"Action=DescribeInstances&Version=2016-11-16");
        let other_type = sign_body("text/plain", b"Action=DescribeInstances&Version=2016-11-15");
        assert_ne!(signed.signature, other_body.signature);
        assert_ne!(signed.signature, other_type.signature);
    }
}
