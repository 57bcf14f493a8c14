//! Orders are checked with the vendor's plugin (`validate`, through a host) before they are
//! accepted: a server the plugin refuses is a 422 at once and nothing is recorded or made.
//! When no host can answer, the order is accepted unchecked, as without the check.

use std::time::Duration;

use provisioner_tests::{Stack, StackOptions, fixture, metric_value};
use serde_json::{Value, json};

/// A DigitalOcean order in a region the plugin does not know.
fn refused_body() -> String {
    let digitalocean = fixture("digitalocean");
    let mut body: Value = serde_json::from_str(&digitalocean.order_body("nowhere")).expect("json");
    body["region"] = json!("mars1");
    body.to_string()
}

#[tokio::test]
async fn a_server_the_plugin_refuses_is_a_422_at_once() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let (status, _, content_type, answer) = stack.post_order(&refused_body()).await?;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(answer["type"], "/problems/refused-by-vendor", "{answer}");
    assert_eq!(answer["vendor"], "digitalocean");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("mars1"),
        "{answer}"
    );
    // Nothing was recorded or sent to the vendor.
    assert!(stack.list_all_orders("").await?.is_empty());
    assert_eq!(
        stack.sim_stats_of("digitalocean").await?["created_total"],
        0
    );
    // A valid order still goes through the same check.
    let id = stack.order_at("digitalocean", "somewhere").await?;
    stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;
    let metrics = stack.metrics().await?;
    for verdict in ["refused", "valid"] {
        let series = format!("provisioner_validations_total{{verdict=\"{verdict}\"}}");
        assert_eq!(
            metric_value(&metrics, &series),
            Some(1.0),
            "{series}\n{metrics}"
        );
    }
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn without_a_host_to_ask_the_order_is_accepted_unchecked() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions::default()).await?;
    // The vendors stay announced; no host answers validations any more.
    stack.kill_host().await;
    let (status, _, _, answer) = stack.post_order(&refused_body()).await?;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().expect("an id").to_string();
    // With a host back, the plugin's create refuses it: the order fails with the reason.
    stack.start_host()?;
    let failed = stack
        .wait_for_status(&id, "failed", Duration::from_secs(60))
        .await?;
    assert_eq!(failed["fault"]["code"], "invalid_request", "{failed}");
    assert!(
        stack
            .api_log()
            .contains("accepting an order without the plugin's check"),
        "{}",
        stack.logs()
    );
    stack.cleanup().await;
    Ok(())
}

/// A host of the test's own for vendor `acme` on `topology`: answers every validation,
/// refusing the servers whose size is `bad`, and tells the test what each message was.
async fn answering_host(
    connection: &lapin::Connection,
    topology: &provisioner_contract::Topology,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<provisioner_contract::ValidateMessage>> {
    use futures_util::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions};
    use provisioner_contract::{
        Envelope, ValidateBatchReply, ValidateMessage, ValidateReply, ValidateVerdict, decode,
        encode,
    };

    let channel = connection.create_channel().await?;
    topology.declare_validate_queue(&channel, "acme").await?;
    let mut consumer = channel
        .basic_consume(
            topology.validate_queue("acme").as_str().into(),
            "acme-host".into(),
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    let (seen, messages) = tokio::sync::mpsc::unbounded_channel();
    let exchange = topology.results_exchange();
    tokio::spawn(async move {
        let judge = |spec: &provisioner_contract::ServerSpec| {
            if spec.size == "bad" {
                ValidateReply::Invalid {
                    message: format!("{} is too bad", spec.name),
                }
            } else {
                ValidateReply::Valid
            }
        };
        while let Some(Ok(delivery)) = consumer.next().await {
            let (envelope, message): (Envelope, ValidateMessage) =
                decode(&delivery.properties, &delivery.data).expect("a validation");
            let body = match &message {
                ValidateMessage::One(request) => encode(&judge(&request.spec)),
                ValidateMessage::Batch(batch) => encode(&ValidateBatchReply {
                    verdicts: batch
                        .checks
                        .iter()
                        .map(|check| ValidateVerdict {
                            id: check.id,
                            reply: judge(&check.spec),
                        })
                        .collect(),
                }),
            };
            let reply_to = delivery.properties.reply_to().clone().expect("reply_to");
            let answer = Envelope {
                message_id: uuid::Uuid::new_v4(),
                correlation_id: envelope.correlation_id,
                traceparent: None,
            };
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    reply_to.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    answer.properties(),
                )
                .await
                .expect("a reply");
            delivery
                .ack(BasicAckOptions::default())
                .await
                .expect("an ack");
            let _ = seen.send(message);
        }
    });
    Ok(messages)
}

/// Checks that come together go to the host as one message, one vendor's each, and each
/// gets its own verdict from the one reply; a check that comes alone goes as a plain
/// validation; with a batch size of 1 every check goes alone; a vendor no host serves is
/// answered unchecked at once. order-api's validator against a host of the test's own, on
/// the test's one thread (so every check is handed over before the round is gathered).
#[tokio::test]
async fn checks_that_come_together_go_as_one_message_each_with_its_verdict() -> anyhow::Result<()> {
    use std::sync::Arc;

    use order_api::amqp::plugin_check::{Validator, ValidatorSlot, Verdict};
    use provisioner_contract::{ServerSpec, Topology, ValidateMessage};

    let _broker = provisioner_tests::hold_broker_shared().await;
    let connection = provisioner_tests::require_rabbitmq().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let topology = Topology::with_prefix(format!("test-{}.", &id[..12]));
    topology.declare_order_api(&connection).await?;
    let mut host_saw = answering_host(&connection, &topology).await?;
    let spec = |n: usize| ServerSpec {
        name: format!("web-{n}"),
        region: "r".into(),
        size: if n.is_multiple_of(3) { "bad" } else { "good" }.into(),
        image: "i".into(),
        ssh_keys: Vec::new(),
        user_data: None,
        labels: Default::default(),
    };
    let expected = |n: usize| {
        if n.is_multiple_of(3) {
            Verdict::Invalid(format!("web-{n} is too bad"))
        } else {
            Verdict::Valid
        }
    };
    let timeout = Duration::from_secs(10);

    for (batch_max, messages) in [(64, vec![10]), (4, vec![4, 4, 2]), (1, vec![1; 10])] {
        let slot = ValidatorSlot::default();
        let validator = Validator::open(&connection, &topology, batch_max).await?;
        slot.set(Some(Arc::new(validator))).await;
        let specs: Vec<ServerSpec> = (0..10).map(spec).collect();
        let checks = specs.iter().map(|spec| slot.check("acme", spec, timeout));
        let verdicts = futures_util::future::join_all(checks).await;
        assert_eq!(
            verdicts,
            (0..10).map(expected).collect::<Vec<_>>(),
            "batch size {batch_max}"
        );
        let mut sizes = Vec::new();
        while sizes.iter().sum::<usize>() < 10 {
            let message = tokio::time::timeout(timeout, host_saw.recv())
                .await?
                .expect("the host's record");
            sizes.push(match message {
                ValidateMessage::One(_) => 1,
                ValidateMessage::Batch(batch) => {
                    assert!(batch.checks.len() > 1, "a batch of one: {batch:?}");
                    batch.checks.len()
                }
            });
        }
        assert_eq!(sizes, messages, "batch size {batch_max}");

        let alone = slot.check("acme", &spec(1), timeout).await;
        assert_eq!(alone, Verdict::Valid);
        let message = tokio::time::timeout(timeout, host_saw.recv()).await?;
        assert!(
            matches!(message, Some(ValidateMessage::One(_))),
            "{message:?}"
        );

        let nobody = tokio::time::timeout(
            Duration::from_secs(2),
            futures_util::future::join_all([
                slot.check("nobody", &spec(1), timeout),
                slot.check("nobody", &spec(2), timeout),
            ]),
        )
        .await?;
        for verdict in nobody {
            assert!(
                matches!(&verdict, Verdict::Unchecked(why) if why.contains("no host of 'nobody'")),
                "{verdict:?}"
            );
        }
    }
    provisioner_tests::delete_topology(&topology, &["acme"]).await;
    Ok(())
}

/// A host answers a message of several checks with one reply holding each check's verdict
/// under its id, from the real plugin: a DigitalOcean server it accepts and one in a region
/// it does not know.
#[tokio::test]
async fn a_host_answers_a_batch_of_checks_in_one_reply() -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
    use provisioner_contract::{
        Envelope, ServerSpec, Topology, ValidateAnswer, ValidateBatch, ValidateCheck,
        ValidateReply, decode, encode,
    };

    let stack = Stack::start(StackOptions::default()).await?;
    let digitalocean = fixture("digitalocean");
    let spec = |region: &str| ServerSpec {
        name: "web-1".into(),
        region: region.into(),
        size: digitalocean.size.into(),
        image: digitalocean.image.into(),
        ssh_keys: Vec::new(),
        user_data: None,
        labels: Default::default(),
    };
    let connection = provisioner_tests::require_rabbitmq().await;
    let channel = connection.create_channel().await?;
    let instance = uuid::Uuid::new_v4();
    let queue = stack
        .topology
        .declare_replies_queue(&channel, instance)
        .await?;
    let mut replies = channel
        .basic_consume(
            queue.as_str().into(),
            "test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    let (accepted, refused) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let batch = ValidateBatch {
        vendor: "digitalocean".into(),
        checks: vec![
            ValidateCheck {
                id: accepted,
                spec: spec(digitalocean.region),
            },
            ValidateCheck {
                id: refused,
                spec: spec("mars1"),
            },
        ],
    };
    let envelope = Envelope {
        message_id: uuid::Uuid::new_v4(),
        correlation_id: Some(uuid::Uuid::new_v4()),
        traceparent: None,
    };
    // The host's validation queue exists once it serves the vendor.
    stack.wait_for_vendors().await?;
    let properties = envelope
        .properties()
        .with_reply_to(Topology::reply_key(instance).as_str().into());
    channel
        .basic_publish(
            stack.topology.requests_exchange().as_str().into(),
            Topology::validate_key("digitalocean").as_str().into(),
            BasicPublishOptions::default(),
            &encode(&batch),
            properties,
        )
        .await?;
    let delivery = tokio::time::timeout(Duration::from_secs(10), replies.next())
        .await?
        .expect("a reply")?;
    let (answer, reply): (Envelope, ValidateAnswer) = decode(&delivery.properties, &delivery.data)?;
    assert_eq!(answer.correlation_id, envelope.correlation_id);
    let ValidateAnswer::Batch(reply) = reply else {
        panic!("one verdict for a batch: {reply:?}");
    };
    assert_eq!(reply.verdicts.len(), 2, "{reply:?}");
    assert_eq!(reply.verdicts[0].id, accepted);
    assert_eq!(reply.verdicts[0].reply, ValidateReply::Valid);
    assert_eq!(reply.verdicts[1].id, refused);
    assert!(
        matches!(&reply.verdicts[1].reply, ValidateReply::Invalid { message } if message.contains("mars1")),
        "{reply:?}"
    );
    let _ = connection.close(200, "done".into()).await;
    stack.cleanup().await;
    Ok(())
}
