//! `provider_sdk::sigv4` against AWS's published Signature Version 4 test suite
//! (`tests/sigv4-vectors/`, its README says where the files come from).
//!
//! Each case is a raw HTTP request (`<case>.req`) and what signing it must give: the
//! canonical request (`.creq`), the string to sign (`.sts`), the `Authorization` header
//! (`.authz`) and the signed request (`.sreq`). The test parses the request, signs it with
//! the suite's credentials, region, service and instant, and compares all four exactly; a
//! mismatch names the case and shows a line diff. Every case of the suite runs: the list
//! below must match the directories, so a vector cannot go missing unnoticed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use provider_sdk::sigv4::{Credentials, Signed, sign, sign_with_details};

const ACCESS_KEY_ID: &str = "AKIDEXAMPLE";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const REGION: &str = "us-east-1";
const SERVICE: &str = "service";
/// 2015-08-30T12:36:00Z, the suite's instant.
const AMZ_DATE: &str = "20150830T123600Z";
const SECONDS: u64 = 1_440_938_160;

/// The suite's STS token (`post-sts-token/readme.txt`).
const STS_TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
/// The token of `get-vanilla-with-session-token`: its `.req` does not carry it (the
/// signer adds it); the suite names it in that case's `.sreq` (and aws-c-auth's copy of the
/// suite in its `context.json`).
const VANILLA_TOKEN: &str = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";

/// Every case of the suite, as its directory under `sigv4-vectors/`.
const CASES: [&str; 34] = [
    "get-header-key-duplicate",
    "get-header-value-multiline",
    "get-header-value-order",
    "get-header-value-trim",
    "get-unreserved",
    "get-utf8",
    "get-vanilla",
    "get-vanilla-empty-query-key",
    "get-vanilla-query",
    "get-vanilla-query-order-encoded",
    "get-vanilla-query-order-key",
    "get-vanilla-query-order-key-case",
    "get-vanilla-query-order-value",
    "get-vanilla-query-unreserved",
    "get-vanilla-utf8-query",
    "get-vanilla-with-session-token",
    "normalize-path/get-relative",
    "normalize-path/get-relative-relative",
    "normalize-path/get-slash",
    "normalize-path/get-slash-dot-slash",
    "normalize-path/get-slash-pointless-dot",
    "normalize-path/get-slashes",
    "normalize-path/get-space",
    "normalize-path/get-special-character",
    "post-header-key-case",
    "post-header-key-sort",
    "post-header-value-case",
    "post-sts-token/post-sts-header-after",
    "post-sts-token/post-sts-header-before",
    "post-vanilla",
    "post-vanilla-empty-query-value",
    "post-vanilla-query",
    "post-x-www-form-urlencoded",
    "post-x-www-form-urlencoded-parameters",
];

/// How a case uses a session token.
enum Token {
    None,
    /// Signed: `x-amz-security-token` is in the canonical request.
    Signed(&'static str),
    /// Added after signing. `sign` always signs a session token (what EC2 and nearly every
    /// service want), so this case is signed without one and the header appended, as the
    /// module documents for the services that want it so.
    AddedAfter(&'static str),
}

fn token_of(case: &str) -> Token {
    match case {
        "get-vanilla-with-session-token" => Token::Signed(VANILLA_TOKEN),
        "post-sts-token/post-sts-header-before" => Token::Signed(STS_TOKEN),
        "post-sts-token/post-sts-header-after" => Token::AddedAfter(STS_TOKEN),
        _ => Token::None,
    }
}

/// A raw HTTP/1.1 request of the suite.
struct RawRequest {
    request_line: String,
    method: String,
    /// The request target (path and query) as written, spaces and UTF-8 included.
    target: String,
    /// (name, value) in order; folded lines joined (see [`parse_request`]).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Parses a `.req` / `.sreq` file. Lines end with `\n` (the files have no `\r`); the
/// request line is `METHOD target HTTP/1.1` with a target that may hold spaces
/// (`normalize-path/get-space`); headers end at an empty line, the body follows.
///
/// A header line starting with a space or tab continues the previous one (obsolete line
/// folding, `get-header-value-multiline`). HTTP/1.1 forbids sending folded values and
/// wasi:http refuses a newline in a value, so `sign` takes values as sent; the fold is
/// replaced by one space, as RFC 9112 section 5.2 tells a recipient to do, keeping the
/// continuation's own leading spaces: `value1   value2      value3`. The signer's
/// trimming must turn that into the suite's `value1 value2 value3`.
fn parse_request(text: &str) -> Result<RawRequest, String> {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.split('\n');
    let request_line = lines.next().ok_or("empty request")?.to_string();
    let (method, rest) = request_line
        .split_once(' ')
        .ok_or("request line without a target")?;
    let (target, version) = rest
        .rsplit_once(' ')
        .ok_or("request line without a version")?;
    if version != "HTTP/1.1" {
        return Err(format!("unexpected HTTP version {version:?}"));
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines.filter(|line| !line.is_empty()) {
        if line.starts_with([' ', '\t']) {
            let (_, value) = headers
                .last_mut()
                .ok_or("a continuation line before any header")?;
            value.push(' ');
            value.push_str(line);
        } else {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header line without a colon: {line:?}"))?;
            headers.push((name.to_string(), value.to_string()));
        }
    }
    Ok(RawRequest {
        method: method.to_string(),
        target: target.to_string(),
        request_line,
        headers,
        body: body.as_bytes().to_vec(),
    })
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigv4-vectors")
}

/// The case directories under `dir`: those holding `<directory name>.req`.
fn find_cases(root: &Path, dir: &Path, found: &mut BTreeSet<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {dir:?}: {e}"));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("reading {dir:?}: {e}"))
            .path();
        if !path.is_dir() {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.join(format!("{name}.req")).is_file() {
            let case = path.strip_prefix(root).unwrap_or(&path);
            found.insert(case.to_string_lossy().replace('\\', "/"));
        }
        find_cases(root, &path, found);
    }
}

fn read(case: &str, extension: &str) -> Result<String, String> {
    let name = case.rsplit('/').next().unwrap_or(case);
    let path = vectors_dir().join(case).join(format!("{name}.{extension}"));
    std::fs::read_to_string(&path).map_err(|e| format!("reading {path:?}: {e}"))
}

/// A line diff of `expected` and `actual` (`-` expected only, `+` actual only), from
/// their longest common subsequence of lines.
fn diff(expected: &str, actual: &str) -> String {
    let old: Vec<&str> = expected.split('\n').collect();
    let new: Vec<&str> = actual.split('\n').collect();
    let mut common = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            let _ = writeln!(out, "    {:?}", old[i]);
            (i, j) = (i + 1, j + 1);
        } else if i < old.len() && (j == new.len() || common[i + 1][j] >= common[i][j + 1]) {
            let _ = writeln!(out, "  - {:?}", old[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "  + {:?}", new[j]);
            j += 1;
        }
    }
    out
}

fn compare(failures: &mut Vec<String>, case: &str, what: &str, expected: &str, actual: &str) {
    if expected != actual {
        failures.push(format!(
            "{case}: the {what} differs (- expected, + actual):\n{}",
            diff(expected, actual)
        ));
    }
}

/// A request line and its headers as `name:value` lines (lowercase names, trimmed
/// values, `authorization` left out), sorted.
fn header_lines<'a>(
    request_line: &str,
    headers: impl Iterator<Item = &'a (String, String)>,
) -> String {
    let mut lines: Vec<String> = headers
        .map(|(name, value)| format!("{}:{}", name.to_ascii_lowercase(), value.trim()))
        .filter(|line| !line.starts_with("authorization:"))
        .collect();
    lines.sort();
    format!("{request_line}\n{}", lines.join("\n"))
}

/// Signs one case and compares every stage with the suite, pushing each mismatch.
fn check_case(case: &str, failures: &mut Vec<String>) -> Result<(), String> {
    let request = parse_request(&read(case, "req")?)?;
    let token = token_of(case);

    // `Host` becomes the URL's authority (wasi:http sends the authority as `Host` and
    // refuses a guest's own), so the signer derives it. `X-Amz-Date` and
    // `X-Amz-Security-Token` are what the signer writes: they must match the suite's.
    let mut host = None;
    let mut headers: Vec<(&str, &str)> = Vec::new();
    for (name, value) in &request.headers {
        match name.to_ascii_lowercase().as_str() {
            "host" => host = Some(value.trim()),
            "x-amz-date" if value.trim() == AMZ_DATE => {}
            "x-amz-security-token" if matches!(token, Token::Signed(t) if t == value.trim()) => {}
            "x-amz-date" | "x-amz-security-token" => {
                return Err(format!("{name}: {value:?} is not the suite's"));
            }
            _ => headers.push((name, value)),
        }
    }
    let host = host.ok_or("the request has no Host")?;
    let url = format!("https://{host}{}", request.target);

    let session_token = match token {
        Token::Signed(token) => Some(token.to_string()),
        Token::None | Token::AddedAfter(_) => None,
    };
    let credentials = Credentials {
        access_key_id: ACCESS_KEY_ID.to_string(),
        secret_access_key: SECRET_ACCESS_KEY.to_string(),
        session_token,
    };
    let time: SystemTime = UNIX_EPOCH + Duration::from_secs(SECONDS);
    let signed: Signed = sign_with_details(
        &credentials,
        REGION,
        SERVICE,
        &request.method,
        &url,
        &headers,
        &request.body,
        time,
    )
    .map_err(|e| format!("signing failed: {e}"))?;
    let mut added = sign(
        &credentials,
        REGION,
        SERVICE,
        &request.method,
        &url,
        &headers,
        &request.body,
        time,
    )
    .map_err(|e| format!("signing failed: {e}"))?;
    if added != signed.headers {
        return Err("sign and sign_with_details answer different headers".into());
    }
    if let Token::AddedAfter(token) = token {
        added.push(("x-amz-security-token".into(), token.into()));
    }

    compare(
        failures,
        case,
        "canonical request",
        &read(case, "creq")?,
        &signed.canonical_request.text,
    );
    compare(
        failures,
        case,
        "string to sign",
        &read(case, "sts")?,
        &signed.string_to_sign,
    );
    let authorization = added
        .iter()
        .find(|(name, _)| name == "authorization")
        .map(|(_, value)| value.as_str())
        .ok_or("no authorization header added")?;
    compare(
        failures,
        case,
        "Authorization header",
        &read(case, "authz")?,
        authorization,
    );

    // The signed request: the suite's `.sreq` is the request plus the signer's headers.
    // Headers are compared as (lowercase name, trimmed value) lists in sorted order, as the
    // suite's files order and space them freely. `Authorization` is left to the `.authz`
    // comparison above: get-vanilla-with-session-token's `.sreq` carries get-vanilla's
    // signature (a slip upstream: its `.authz`, `.sts` and aws-c-auth's newer copy all
    // agree on 07ec1639...).
    let expected = parse_request(&read(case, "sreq")?)?;
    let actual_headers = request
        .headers
        .iter()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            name != "x-amz-date" && name != "x-amz-security-token"
        })
        .chain(added.iter());
    compare(
        failures,
        case,
        "signed request's headers",
        &header_lines(&expected.request_line, expected.headers.iter()),
        &header_lines(&request.request_line, actual_headers),
    );
    if request.request_line != expected.request_line || request.body != expected.body {
        failures.push(format!(
            "{case}: the signed request's line or body is not the request's"
        ));
    }
    Ok(())
}

/// Every case of AWS's SigV4 test suite signs to exactly the canonical request, string to
/// sign, `Authorization` header and signed request the suite publishes.
#[test]
fn every_vector_of_the_aws_suite_signs_as_published() {
    let root = vectors_dir();
    let mut found = BTreeSet::new();
    find_cases(&root, &root, &mut found);
    let listed: BTreeSet<String> = CASES.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        found, listed,
        "the vector directories and CASES disagree: every case must run"
    );

    let mut failures = Vec::new();
    for case in CASES {
        if let Err(error) = check_case(case, &mut failures) {
            failures.push(format!("{case}: {error}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// The parser joins a folded header line with one space and splits the body off; the
/// harness itself must not be what makes the multiline case pass.
#[test]
fn the_request_parser_unfolds_and_splits() {
    let request = parse_request("POST /a b?x=1 HTTP/1.1\nHost:h\nMy:v1\n  v2\n\nbody=1").unwrap();
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/a b?x=1");
    assert_eq!(
        request.headers,
        [
            ("Host".to_string(), "h".to_string()),
            ("My".to_string(), "v1   v2".to_string())
        ]
    );
    assert_eq!(request.body, b"body=1");
}
