//! The AWS EC2 plugin against moto, an independent fake of AWS that checks every request's
//! SigV4 signature (`provisioner_tests::moto`).
//!
//! # Sections
//! - moto itself: its authentication is on, so a plugin that signs wrongly is refused there
//!   as it would be at AWS; the fault proxy with EC2's profile carries signed requests to it.
//! - the plugin through the whole system (below).

use std::collections::BTreeMap;
use std::time::Duration;

use provisioner_conformance::Target;
use provisioner_tests::moto::{DEFAULT_IMAGE_NAME, Moto};
use provisioner_tests::shipped_manifest;
use provisioner_tests::simulator::{arm_fault_at, fault_proxy, shipped_fault_profile};
use provisioner_tests::{Stack, StackOptions, plugin_component, workspace_root};
use sha2::Digest as _;
use vendor_sim::proxy::FaultProfile;

// ---------------------------------------------------------------------------------------
// moto itself
// ---------------------------------------------------------------------------------------

/// moto answers a request signed with the access key it made and refuses one signed with a
/// wrong secret (`AuthFailure`): the plugin's signatures are really checked. Its shipped
/// Amazon image is found by owner and name, as the plugin looks images up.
#[tokio::test]
async fn moto_refuses_a_wrong_signature() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let region = "us-east-1";

    let instances = moto.describe_instances(region, &[]).await?;
    assert_eq!(instances, serde_json::json!([]), "{}", moto.log_tail());

    let wrong_secret = format!("{}x", &moto.secret_access_key[1..]);
    let refused = moto
        .describe_instances_with(&moto.url, &wrong_secret, region, &[])
        .await
        .expect_err("moto answered a request signed with a wrong secret");
    assert!(
        format!("{refused:#}").contains("AuthFailure"),
        "{refused:#}\n{}",
        moto.log_tail()
    );

    let image = moto.default_image(region).await?;
    assert!(image.id.starts_with("ami-"), "{image:?}");
    assert_eq!(image.name, DEFAULT_IMAGE_NAME);
    assert_eq!(image.owner_alias.as_deref(), Some("amazon"), "{image:?}");

    moto.stop().await;
    Ok(())
}

/// The fault proxy in front of moto with EC2's fault profile (`signed_requests = true`)
/// carries boto3's signed requests through unchanged, so moto answers them; the same profile
/// without that line replaces the `Host` the client signed, and moto refuses the request.
#[tokio::test]
async fn the_fault_proxy_carries_signed_requests_to_moto() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let region = "us-east-1";
    let signed = std::fs::read_to_string(workspace_root().join("tests/fixtures/faults/ec2.toml"))?;
    let unsigned = signed.replace("\nsigned_requests = true\n", "\n");
    assert_ne!(
        signed, unsigned,
        "the EC2 profile says its requests are signed"
    );
    for (profile, answered) in [(signed, true), (unsigned, false)] {
        let proxy = fault_proxy(&moto.url, FaultProfile::parse(&profile)?).await?;
        let listed = moto
            .describe_instances_with(&proxy.url, &moto.secret_access_key, region, &[])
            .await;
        match listed {
            Ok(instances) => {
                assert!(
                    answered,
                    "moto answered a request whose Host changed: {instances}"
                );
                assert_eq!(instances, serde_json::json!([]));
            }
            Err(error) => {
                assert!(!answered, "{error:#}\n{}", moto.log_tail());
                assert!(format!("{error:#}").contains("AuthFailure"), "{error:#}");
            }
        }
        assert!(
            proxy.recorded_requests().iter().all(|r| r.forwarded),
            "{:?}",
            proxy.recorded_requests()
        );
    }
    moto.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// the plugin through the whole system
// ---------------------------------------------------------------------------------------

/// The AWS plugin's manifest against `endpoint` (moto, or a proxy in front of it): the
/// shipped test manifest (`plugins/aws/moto.toml`) with its endpoint and grant moved there.
fn moto_manifest(endpoint: &str) -> anyhow::Result<String> {
    shipped_manifest("aws", "moto.toml", "http://127.0.0.1:5000", endpoint)
}

/// A stack whose host has the AWS plugin against `endpoint`, with moto's key as its secrets.
async fn stack_with_aws(moto: &Moto, endpoint: &str) -> anyhow::Result<Stack> {
    let stack = Stack::start(StackOptions {
        host_env: vec![
            (
                "PLUGIN_SECRET_AWS_ACCESS_KEY_ID".into(),
                moto.access_key_id.clone(),
            ),
            (
                "PLUGIN_SECRET_AWS_SECRET_ACCESS_KEY".into(),
                moto.secret_access_key.clone(),
            ),
        ],
        ..StackOptions::default()
    })
    .await?;
    stack.serve_plugin("aws", &moto_manifest(endpoint)?).await?;
    Ok(stack)
}

/// An order at AWS goes `active` through order-api, RabbitMQ, a host and the plugin, with
/// an image named (looked up with DescribeImages); boto3 finds the instance with what was
/// asked: the type, the image, the `Name` and idempotency-key tags, the order's labels, a
/// `ClientToken`. Deleting the order terminates it.
#[tokio::test]
async fn an_aws_order_goes_active_and_its_delete_terminates_the_instance() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let region = "us-east-1";
    let image = moto.default_image(region).await?;
    let stack = stack_with_aws(&moto, &moto.url).await?;

    let body = serde_json::json!({
        "vendor": "aws",
        "region": region,
        "size": "t3.micro",
        "image": DEFAULT_IMAGE_NAME,
        "name": "aws-e2e-1",
        "labels": {"team": "e2e"},
        "user_data": "#cloud-config\nruncmd:\n  - echo hello\n",
    });
    let id = stack.order_accepted(&body).await?;
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(90))
        .await?;
    let vendor_id = active["server"]["vendor_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let instance_id = vendor_id
        .strip_prefix("us-east-1/")
        .unwrap_or_else(|| panic!("vendor id {vendor_id} is not us-east-1/<instance>"));

    let found = moto
        .describe_instances(region, &[("instance-id", &[instance_id])])
        .await?;
    let instance = &found[0];
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found:#}");
    assert_eq!(instance["InstanceType"], "t3.micro", "{instance:#}");
    assert_eq!(instance["ImageId"], image.id.as_str(), "{instance:#}");
    assert_eq!(instance["Tags"]["Name"], "aws-e2e-1", "{instance:#}");
    assert_eq!(instance["Tags"]["team"], "e2e", "{instance:#}");
    let key = instance["Tags"]["provisioner-idempotency-key"]
        .as_str()
        .unwrap_or_default();
    assert!(!key.is_empty(), "{instance:#}");
    // The ClientToken is the key's, as the plugin derives it (SHA-256 of `provisioner:<key>`).
    let expected: String = sha2::Sha256::digest(format!("provisioner:{key}").as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(instance["ClientToken"], expected.as_str(), "{instance:#}");
    assert_eq!(
        active["server"]["ipv4"], instance["PublicIpAddress"],
        "{active:#}\n{instance:#}"
    );

    stack.delete_and_wait(&id, Duration::from_secs(90)).await?;
    let after = moto
        .describe_instances(region, &[("instance-id", &[instance_id])])
        .await?;
    assert_eq!(after[0]["State"], "terminated", "{after:#}");

    stack.cleanup().await;
    moto.stop().await;
    Ok(())
}

/// `RunInstances`' answer lost after moto made the instance (the fault proxy reads the
/// whole answer, then drops the connection): the host's retry finds the instance by its tag
/// and adopts it, so the order goes `active` with one instance, not two.
#[tokio::test]
async fn a_lost_run_instances_answer_makes_one_instance() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let region = "us-east-1";
    let proxy = fault_proxy(&moto.url, shipped_fault_profile("aws")?).await?;
    let stack = stack_with_aws(&moto, &proxy.url).await?;
    arm_fault_at(
        &proxy.url,
        serde_json::json!({
            "vendor": "aws", "kind": "lost_response", "method": "POST", "path": "/", "count": 1
        }),
    )
    .await?;

    let body = serde_json::json!({
        "vendor": "aws", "region": region, "size": "t3.micro",
        "image": DEFAULT_IMAGE_NAME, "name": "aws-lost-answer",
    });
    let id = stack.order_accepted(&body).await?;
    stack
        .wait_for_status(&id, "active", Duration::from_secs(90))
        .await?;

    let requests = proxy.recorded_requests();
    assert!(
        requests
            .iter()
            .any(|r| r.fault.as_deref() == Some("lost_response")),
        "the lost answer never fired: {requests:#?}"
    );
    let made = moto
        .describe_instances(region, &[("tag:Name", &["aws-lost-answer"])])
        .await?;
    assert_eq!(
        made.as_array().map(Vec::len),
        Some(1),
        "one instance for the order: {made:#}\n{}",
        stack.host_log()
    );

    stack.cleanup().await;
    moto.stop().await;
    Ok(())
}

/// The conformance kit's five suites pass against moto, through the fault proxy with EC2's
/// own XML error answers (`plugins/aws/faults.toml`); every page is read over moto's real
/// pages of 5 (the manifest's `page-size`) with 6 extra servers.
#[tokio::test]
async fn the_aws_plugin_passes_every_suite_against_moto() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let secrets = BTreeMap::from([
        (
            "PLUGIN_SECRET_AWS_ACCESS_KEY_ID".to_string(),
            moto.access_key_id.clone(),
        ),
        (
            "PLUGIN_SECRET_AWS_SECRET_ACCESS_KEY".to_string(),
            moto.secret_access_key.clone(),
        ),
    ]);
    let report = crate::conformance::run_kit_against(
        "aws-moto",
        plugin_component("aws"),
        moto_manifest(&moto.url)?,
        Target::FaultProxy {
            profile: workspace_root().join("plugins/aws/faults.toml"),
            base_url_key: "endpoint".into(),
        },
        secrets,
        |options| {
            options.paging_servers = Some(6);
            options.boot_timeout = Duration::from_secs(30);
        },
    )
    .await?;
    // Passed first with moto's log shown on failure; then the kit's usual bar.
    assert!(report.passed(), "{}\n{}", report.table(), moto.log_tail());
    crate::conformance::passed_every_suite(&report);
    moto.stop().await;
    Ok(())
}
