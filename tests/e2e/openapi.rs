//! The OpenAPI document: served at `/openapi.json` (3.1, every route, the bearer scheme),
//! a docs page at `/docs`, and schemathesis run against the live API with the document
//! finds no 5xx and no answer that breaks it (status codes, content types, headers, bodies),
//! and that every operation refuses a request without a token.

use std::time::Duration;

use provisioner_tests::{ApiClient, Stack, StackOptions, workspace_root};
use reqwest::Method;

#[tokio::test]
async fn the_served_document_describes_the_api_and_the_api_keeps_to_it() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    // Orders in several states, so that lists and pages have something to show.
    let id = stack.order_server("documented").await?;
    stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;

    let anonymous = ApiClient::new(&stack.api_url, None)?;
    let document = anonymous.get("/openapi.json").await?;
    assert!(
        document["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    let docs = anonymous.send_raw(Method::GET, "/docs", None).await?;
    assert_eq!(docs.status(), 200);
    assert!(
        docs.headers()["content-type"]
            .to_str()?
            .starts_with("text/html")
    );
    // Offline: the page loads its files from order-api, nothing from another origin.
    let page = docs.text().await?;
    for attribute in ["src=\"", "href=\""] {
        for reference in page.split(attribute).skip(1) {
            let target = reference.split('"').next().unwrap_or_default();
            assert!(
                !target.contains("//"),
                "/docs loads {target} from elsewhere:\n{page}"
            );
        }
    }
    let initializer = anonymous
        .send_raw(Method::GET, "/docs/swagger-initializer.js", None)
        .await?
        .error_for_status()?
        .text()
        .await?;
    assert!(initializer.contains("/openapi.json"), "{initializer}");

    let schemathesis = workspace_root().join("target/sdk-venv/bin/schemathesis");
    anyhow::ensure!(
        schemathesis.exists(),
        "{} is missing: run scripts/setup.sh (it installs tests/sdk/requirements.txt)",
        schemathesis.display()
    );
    // The tenant's operations with a tenant's token, the operators' with an admin token.
    // The operator endpoints have no links between them: no stateful phase for those.
    for (token, tag_filter, phases) in [
        (
            &stack.token,
            "--exclude-tag",
            "examples,coverage,fuzzing,stateful",
        ),
        (
            &stack.admin_token,
            "--include-tag",
            "examples,coverage,fuzzing",
        ),
    ] {
        let output = tokio::process::Command::new(&schemathesis)
            .arg("--config-file")
            .arg(workspace_root().join("tests/schemathesis.toml"))
            .arg("run")
            .arg(format!("{}/openapi.json", stack.api_url))
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args([tag_filter, "operators"])
            .args(["--checks", "all", "--mode", "all"])
            // `DELETE /v1/orders/{id}` deletes the order's *server* (202, `deleting ->
            // deleted`); the order stays, readable with its event log, as the record of what
            // was made and deleted: a `200` for it afterwards is the API's contract, not the
            // use after free this check looks for.
            .args(["--exclude-checks", "use_after_free"])
            // `GET /v1/events` is a stream that never ends by itself (it follows the
            // caller's orders for as long as the client keeps it): each call would only run
            // into the request timeout. `tests/e2e/event_streams.rs` tests it.
            .args(["--exclude-path", "/v1/events"])
            .args(["--phases", phases])
            .args(["--max-examples", "150", "--request-timeout", "10"])
            .env("NO_COLOR", "1")
            // Its cache (.schemathesis/) goes to target/, not the source tree.
            .current_dir(provisioner_tests::target_dir())
            .output()
            .await?;
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "schemathesis ({tag_filter} operators) found problems:\n{report}\n{}",
            stack.logs()
        );
        // It did test operations (not an empty run), and was let in.
        assert!(
            report.contains("Tested:") && !report.contains("Tested: 0"),
            "{report}"
        );
        assert!(!report.contains("Authentication failed"), "{report}");
    }
    stack.cleanup().await;
    Ok(())
}
