//! EC2's XML answers (only what the plugin reads) and the mapping of EC2 instance states
//! to the WIT status.
//!
//! Elements are matched by local name, whatever namespace EC2 (or a fake of it) declares.
//! Reference: <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Instance.html>,
//! `API_Image.html`, and `errors-overview.html` for the error answer.

use std::collections::BTreeMap;

use roxmltree::{Document, Node};

use provider_sdk::paging::Page;
use provider_sdk::status::{self, Rules};
use provider_sdk::{Server, ServerStatus};

use crate::query::VendorId;

/// An instance as `DescribeInstances` or `RunInstances` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `i-...`.
    pub id: String,
    /// `instanceState/name`: `pending`, `running`, `stopping`, `stopped`, `shutting-down`,
    /// `terminated`.
    pub state: String,
    /// When it was first launched: ISO 8601 in UTC (`2018-05-08T16:46:19.000Z`), sorts as
    /// text. The primary network interface's attach time, else `launchTime` (which moves
    /// with every stop and start, so it cannot pick the oldest of two for good).
    pub launch_time: String,
    /// The public IPv4 address (`ipAddress`), once assigned.
    pub ipv4: Option<String>,
    /// The IPv6 address: the instance's primary one (`ipv6Address`), else the first of its
    /// network interfaces'.
    pub ipv6: Option<String>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// An image as `DescribeImages` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `ami-...`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it was made: ISO 8601 in UTC, sorts as text.
    pub creation_date: String,
}

/// EC2's error answer: `<Response><Errors><Error><Code>..</Code><Message>..</Message>
/// </Error></Errors><RequestID>..</RequestID></Response>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// The error code, e.g. `InvalidInstanceID.NotFound`.
    pub code: String,
    /// What EC2 says about it.
    pub message: String,
    /// The request id support asks for.
    pub request_id: Option<String>,
}

impl ErrorAnswer {
    /// `Code: Message (request id ...)`.
    pub fn reason(&self) -> String {
        let mut reason = format!("{}: {}", self.code, self.message);
        if let Some(id) = &self.request_id {
            reason.push_str(&format!(" (request id {id})"));
        }
        reason
    }
}

/// EC2's instance states in the vendor-neutral WIT terms.
pub const STATES: Rules = &[
    (&["pending"], ServerStatus::Provisioning),
    (&["running"], ServerStatus::Running),
    (&["stopping"], ServerStatus::Stopped),
    (&["stopped"], ServerStatus::Stopped),
    (&["shutting-down"], ServerStatus::Deleting),
    (&["terminated"], ServerStatus::Deleted),
];

impl Instance {
    /// The server in the host's terms: vendor id `<region>/<instance-id>`, named by its
    /// `Name` tag (its instance id without one); an unknown state is logged and reported as
    /// provisioning.
    pub fn into_server(mut self, region: &str) -> Server {
        let vendor_id = VendorId {
            region: region.into(),
            instance_id: self.id.clone(),
        };
        Server {
            vendor_id: vendor_id.to_string(),
            name: self.tags.remove("Name").unwrap_or(self.id),
            status: status::map(&[&self.state], STATES),
            ipv4: self.ipv4,
            ipv6: self.ipv6,
        }
    }
}

/// Parses `xml`, naming `what` in the error.
fn document<'a>(xml: &'a str, what: &str) -> Result<Document<'a>, String> {
    Document::parse(xml).map_err(|e| format!("the {what} answer is not XML: {e}"))
}

/// The first child element of `node` called `name`.
fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

/// Every `item` child element of `node`'s child `set` (EC2's list shape).
fn items<'a, 'input>(
    node: Node<'a, 'input>,
    set: &str,
) -> impl Iterator<Item = Node<'a, 'input>> + use<'a, 'input> {
    child(node, set)
        .into_iter()
        .flat_map(|set| set.children())
        .filter(|n| n.is_element() && n.tag_name().name() == "item")
}

/// The text of `node`'s child `name`, trimmed; `None` when missing or empty.
fn text(node: Node<'_, '_>, name: &str) -> Option<String> {
    let value = child(node, name)?.text().unwrap_or("").trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// The text of `node`'s child `name` exactly as stored (tags: a value may hold spaces);
/// `None` when missing.
fn raw_text(node: Node<'_, '_>, name: &str) -> Option<String> {
    Some(child(node, name)?.text().unwrap_or("").to_string())
}

/// `nextToken` of a list answer, when not empty.
fn next_token(root: Node<'_, '_>) -> Option<String> {
    text(root, "nextToken")
}

/// When the instance was first launched: the attach time of its primary network interface
/// (device 0), which a stop and start leaves alone (`launchTime` moves with every start).
fn first_launch(node: Node<'_, '_>) -> Option<String> {
    items(node, "networkInterfaceSet")
        .filter_map(|interface| child(interface, "attachment"))
        .find(|attachment| text(*attachment, "deviceIndex").as_deref() == Some("0"))
        .and_then(|attachment| text(attachment, "attachTime"))
}

/// One `instancesSet/item`.
fn instance(node: Node<'_, '_>) -> Result<Instance, String> {
    let id = text(node, "instanceId").ok_or("an instance without instanceId")?;
    let state = child(node, "instanceState")
        .and_then(|state| text(state, "name"))
        .ok_or_else(|| format!("instance {id} without instanceState/name"))?;
    let interface_ipv6 = || {
        items(node, "networkInterfaceSet")
            .flat_map(|interface| items(interface, "ipv6AddressesSet"))
            .find_map(|address| text(address, "ipv6Address"))
    };
    let tags = items(node, "tagSet")
        .filter_map(|tag| {
            let key = raw_text(tag, "key").filter(|key| !key.is_empty())?;
            Some((key, raw_text(tag, "value").unwrap_or_default()))
        })
        .collect();
    Ok(Instance {
        state,
        launch_time: first_launch(node)
            .or_else(|| text(node, "launchTime"))
            .unwrap_or_default(),
        ipv4: text(node, "ipAddress"),
        ipv6: text(node, "ipv6Address").or_else(interface_ipv6),
        tags,
        id,
    })
}

/// The instances of a `DescribeInstancesResponse` (`reservationSet/item/instancesSet/item`)
/// or a `RunInstancesResponse` (`instancesSet/item`): every instance of every reservation,
/// with the next page's token (`nextToken`: more pages follow).
pub fn instances(xml: &str) -> Result<Page<Instance, String>, String> {
    let document = document(xml, "DescribeInstances/RunInstances")?;
    let root = document.root_element();
    let mut found = Vec::new();
    if child(root, "reservationSet").is_some() {
        for reservation in items(root, "reservationSet") {
            for node in items(reservation, "instancesSet") {
                found.push(instance(node)?);
            }
        }
    } else if child(root, "instancesSet").is_some() {
        for node in items(root, "instancesSet") {
            found.push(instance(node)?);
        }
    } else {
        return Err(format!(
            "the answer <{}> has neither reservationSet nor instancesSet",
            root.tag_name().name()
        ));
    }
    Ok(Page {
        items: found,
        next: next_token(root),
    })
}

/// The instance ids and new states of a `TerminateInstancesResponse`.
pub fn terminating(xml: &str) -> Result<Vec<(String, String)>, String> {
    let document = document(xml, "TerminateInstances")?;
    let root = document.root_element();
    if child(root, "instancesSet").is_none() {
        return Err("the TerminateInstances answer has no instancesSet".into());
    }
    Ok(items(root, "instancesSet")
        .filter_map(|item| {
            let state = child(item, "currentState").and_then(|state| text(state, "name"));
            Some((text(item, "instanceId")?, state.unwrap_or_default()))
        })
        .collect())
}

/// The images of a `DescribeImagesResponse`, with the next page's token.
pub fn images(xml: &str) -> Result<Page<Image, String>, String> {
    let document = document(xml, "DescribeImages")?;
    let root = document.root_element();
    if child(root, "imagesSet").is_none() {
        return Err("the DescribeImages answer has no imagesSet".into());
    }
    let images = items(root, "imagesSet")
        .filter_map(|item| {
            Some(Image {
                id: text(item, "imageId")?,
                name: text(item, "name").unwrap_or_default(),
                creation_date: text(item, "creationDate").unwrap_or_default(),
            })
        })
        .collect();
    Ok(Page {
        items: images,
        next: next_token(root),
    })
}

/// EC2's error answer, if `body` is one: the first `Error` with a `Code` anywhere in it
/// (EC2 nests it in `Response/Errors`; AWS's other query services in `ErrorResponse`), and
/// the `RequestID` (or `RequestId`) beside it.
pub fn error(body: &str) -> Option<ErrorAnswer> {
    let document = Document::parse(body).ok()?;
    let error = document.descendants().find(|n| {
        n.is_element() && n.tag_name().name() == "Error" && child(*n, "Code").is_some()
    })?;
    let request_id = document
        .descendants()
        .find(|n| n.is_element() && matches!(n.tag_name().name(), "RequestID" | "RequestId"))
        .and_then(|n| n.text())
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty());
    Some(ErrorAnswer {
        code: text(error, "Code")?,
        message: text(error, "Message").unwrap_or_default(),
        request_id,
    })
}

/// `Code: Message (request id ...)` of an error answer (the SDK client's reason parser).
pub fn error_reason(body: &str) -> Option<String> {
    error(body).map(|answer| answer.reason())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = include_str!("../testdata/describe-instances-page.xml");
    const MOTO_DESCRIBE: &str = include_str!("../testdata/moto-describe-instances.xml");
    const MOTO_RUN: &str = include_str!("../testdata/moto-run-instances.xml");
    const MOTO_TERMINATE: &str = include_str!("../testdata/moto-terminate-instances.xml");
    const MOTO_NOT_FOUND: &str = include_str!("../testdata/moto-error-not-found.xml");
    const THROTTLED: &str = include_str!("../testdata/error-throttled.xml");
    const IMAGES: &str = include_str!("../testdata/describe-images.xml");

    /// The documented DescribeInstances shape: addresses, tags (an empty value kept), the
    /// instance-level IPv6 preferred, the interface's when there is none, the next token.
    #[test]
    fn reads_a_describe_instances_page() {
        let page = instances(PAGE).unwrap();
        assert_eq!(page.next.as_deref(), Some("eyJ2IjoiMiIsImMiOiJ0ZXN0In0="));
        let [first, second] = page.items.as_slice() else {
            panic!("{page:?}");
        };
        assert_eq!(first.id, "i-1234567890abcdef0");
        assert_eq!(first.state, "running");
        assert_eq!(first.launch_time, "2018-05-08T16:46:19.000Z");
        assert_eq!(first.ipv4.as_deref(), Some("54.194.252.215"));
        assert_eq!(first.ipv6.as_deref(), Some("2001:db8:1234:1a2b::123"));
        assert_eq!(first.tags["Name"], "web-1");
        assert_eq!(first.tags["provisioner-idempotency-key"], "order-1");
        assert_eq!(first.tags["team"], "");
        assert_eq!(second.state, "pending");
        assert_eq!(second.ipv4, None);
        assert_eq!(second.ipv6.as_deref(), Some("2001:db8:1234:1a2b::7"));

        let server = first.clone().into_server("eu-west-1");
        assert_eq!(server.vendor_id, "eu-west-1/i-1234567890abcdef0");
        assert_eq!(server.name, "web-1");
        assert_eq!(server.status, ServerStatus::Running);
        // No Name tag: the instance id names it.
        let unnamed = second.clone().into_server("eu-west-1");
        assert_eq!(unnamed.name, "i-0598c7d356eba48d7");
        assert_eq!(unnamed.status, ServerStatus::Provisioning);
    }

    /// Tag keys and values come back exactly as stored: a key with surrounding spaces (which
    /// `validate` lets through as a tag value) is still found by its look-up.
    #[test]
    fn tags_keep_their_spaces() {
        let page = instances(
            "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>\
             <instanceId>i-1</instanceId><instanceState><name>running</name></instanceState>\
             <tagSet><item><key>provisioner-idempotency-key</key><value> k 1 </value></item>\
             </tagSet></item></instancesSet></item></reservationSet>\
             </DescribeInstancesResponse>",
        )
        .unwrap();
        assert_eq!(page.items[0].tags["provisioner-idempotency-key"], " k 1 ");
    }

    /// An instance stopped and started again has a new `launchTime`; its primary network
    /// interface keeps the first launch's attach time, which decides the oldest (every
    /// retry adopts the same instance of two).
    #[test]
    fn the_first_launch_outlives_a_restart() {
        let page = instances(
            "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>\
             <instanceId>i-1</instanceId><instanceState><name>running</name></instanceState>\
             <launchTime>2026-02-01T00:00:00.000Z</launchTime><networkInterfaceSet>\
             <item><attachment><deviceIndex>1</deviceIndex>\
             <attachTime>2025-06-01T00:00:00.000Z</attachTime></attachment></item>\
             <item><attachment><deviceIndex>0</deviceIndex>\
             <attachTime>2025-01-01T00:00:00.000Z</attachTime></attachment></item>\
             </networkInterfaceSet></item></instancesSet></item></reservationSet>\
             </DescribeInstancesResponse>",
        )
        .unwrap();
        assert_eq!(page.items[0].launch_time, "2025-01-01T00:00:00.000Z");
    }

    /// moto's answers (what the plugin's tests run against): several reservations, a
    /// terminated instance without an address, the last page without a next token.
    #[test]
    fn reads_moto_describe_and_run_answers() {
        let page = instances(MOTO_DESCRIBE).unwrap();
        assert_eq!(page.next, None);
        let states: Vec<&str> = page.items.iter().map(|i| i.state.as_str()).collect();
        assert_eq!(states, ["terminated", "running"]);
        assert_eq!(page.items[0].ipv4, None);
        assert_eq!(page.items[1].ipv4.as_deref(), Some("54.214.224.211"));
        assert_eq!(page.items[1].ipv6, None);

        let run = instances(MOTO_RUN).unwrap();
        let [made] = run.items.as_slice() else {
            panic!("{run:?}");
        };
        assert_eq!(made.id, "i-87d80da241669d3a4");
        assert_eq!(made.state, "pending");
        assert_eq!(made.tags["provisioner-idempotency-key"], "k1");
    }

    /// A TerminateInstances answer names each instance's new state.
    #[test]
    fn reads_a_terminate_answer() {
        assert_eq!(
            terminating(MOTO_TERMINATE).unwrap(),
            [(
                "i-87d80da241669d3a4".to_string(),
                "shutting-down".to_string()
            )]
        );
    }

    /// Images with their creation dates and the next token.
    #[test]
    fn reads_a_describe_images_page() {
        let page = images(IMAGES).unwrap();
        assert_eq!(page.next.as_deref(), Some("AAEAAXZ0b2tlbg=="));
        let ids: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["ami-0a1b2c3d4e5f60718", "ami-0f9e8d7c6b5a41302"]);
        assert_eq!(page.items[1].creation_date, "2024-12-12T21:36:02.000Z");
        assert_eq!(
            page.items[0].name,
            "al2023-ami-2023.6.20241121.0-kernel-6.1-x86_64"
        );
    }

    /// EC2's error answer, with and without a namespace; other bodies are no error answer.
    #[test]
    fn reads_error_answers() {
        let answer = error(MOTO_NOT_FOUND).unwrap();
        assert_eq!(answer.code, "InvalidInstanceID.NotFound");
        assert_eq!(
            answer.message,
            "The instance ID 'i-0123456789abcdef0' does not exist"
        );
        assert_eq!(answer.request_id.as_deref(), Some("request-id"));
        assert_eq!(
            error_reason(THROTTLED).unwrap(),
            "RequestLimitExceeded: Request limit exceeded. (request id \
             d2d2bd5d-4fc1-4fdf-9f8a-3c9e2b0f7a11)"
        );
        let sts = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>\
                   <Message>bad</Message></Error><RequestId>r-1</RequestId></ErrorResponse>";
        assert_eq!(
            error_reason(sts).unwrap(),
            "InvalidClientTokenId: bad (request id r-1)"
        );
        assert_eq!(error("{\"message\": \"json\"}"), None);
        assert_eq!(error("<html><body>Bad Gateway</body></html>"), None);
    }

    /// Answers of the wrong shape are errors, not empty lists.
    #[test]
    fn refuses_answers_of_another_shape() {
        assert!(instances("<DescribeInstancesResponse/>").is_err());
        assert!(instances("not xml").is_err());
        assert!(images("<DescribeImagesResponse/>").is_err());
        assert!(terminating("<TerminateInstancesResponse/>").is_err());
        assert!(
            instances(
                "<R><instancesSet><item><instanceId>i-1a2b3c4d</instanceId></item>\
                 </instancesSet></R>"
            )
            .is_err()
        );
    }

    /// Every EC2 state maps; shutting-down is deleting, terminated deleted.
    #[test]
    fn states_map_to_the_wit_status() {
        let of = |state: &str| status::lookup(&[state], STATES);
        assert_eq!(of("pending"), Some(ServerStatus::Provisioning));
        assert_eq!(of("running"), Some(ServerStatus::Running));
        assert_eq!(of("stopping"), Some(ServerStatus::Stopped));
        assert_eq!(of("stopped"), Some(ServerStatus::Stopped));
        assert_eq!(of("shutting-down"), Some(ServerStatus::Deleting));
        assert_eq!(of("terminated"), Some(ServerStatus::Deleted));
        assert_eq!(of("rebooting"), None);
    }
}
