//! AWS EC2 provider plugin: a WebAssembly component (wasm32-wasip2) implementing the
//! `provisioner:provider` world against Amazon EC2's Query API (`Version=2016-11-15`),
//! every request signed with AWS Signature Version 4 (`provider_sdk::sigv4`).
//!
//! **Orders.** `region` is an AWS region (`us-east-1`), `size` an instance type
//! (`t3.micro`), `image` an AMI id (`ami-` and 8 or 17 hex digits) or an AMI name, looked up
//! with `DescribeImages` among the images of `[config] image-owners` (the newest available
//! by creation date; `*` and `?` are wildcards, so `al2023-ami-2023.*-kernel-6.1-x86_64`
//! names the latest build); a name matching nothing is `invalid-request` naming it. The
//! server is one instance launched by `RunInstances`, tagged `Name` = the order's name
//! (EC2 allows repeated names: it is used as it is), `provisioner-idempotency-key` = the
//! order's idempotency key, and every label of the order as a tag.
//!
//! **Idempotency, EC2's way.** `create-server` first looks the key up in the order's region
//! (`DescribeInstances` filtered on the tag, instances not shutting down or terminated) and
//! adopts the oldest instance carrying it; else it launches one with the `ClientToken`
//! derived from the key (SHA-256, 64 hex digits): EC2 answers a repeated token with the
//! instance it made the first time, so even a lost answer the look-up misses (EC2's
//! listing is eventually consistent) cannot make a second server. A repeated token with
//! other parameters (a newer image of the same name meanwhile) is EC2's
//! `IdempotentParameterMismatch`: transient, so the host retries and the look-up, by then
//! consistent, adopts the instance.
//!
//! **Vendor ids.** EC2 is regional and `get-server` / `delete-server` get only the vendor
//! id, so it names the region: `<region>/<instance-id>`, e.g.
//! `us-east-1/i-0123456789abcdef0` (parsed strictly; anything else is `invalid-request`).
//! States: `pending` -> provisioning, `running` -> running, `stopping` / `stopped` ->
//! stopped, `shutting-down` -> deleting, `terminated` -> deleted (EC2 keeps showing a
//! terminated instance for about an hour, then answers `InvalidInstanceID.NotFound`:
//! not-found). Addresses: the public IPv4 (`ipAddress`), the IPv6 address (`ipv6Address`,
//! else the first of the network interfaces'). EC2's listing is eventually consistent: an
//! instance just launched may be unknown for a moment, so `get-server` and `delete-server`
//! ask once more, two seconds later, before they answer not-found.
//!
//! **SSH keys and user data.** An EC2 key pair puts one key on an instance; cloud-init takes
//! any number, so the order's keys are written into the user data
//! (`provider_sdk::cloud_init`: a `#cloud-config` listing them, or a MIME multipart message
//! with the order's own user data unchanged as its first part). EC2 takes at most 16 KiB of
//! user data before base64; more, or user data cloud-init cannot combine with keys, is
//! refused by `validate`.
//!
//! **Regions scanned.** `find-server` gets only a key and `list-servers` must see every
//! server, so both ask every region of `[config] regions` (eight at a time; each region's
//! pages followed to the end with `NextToken`): without that list, the 17 commercial
//! regions every account has enabled (`validation::DEFAULT_REGIONS`), 17 requests or more
//! per call. Set `regions` to the regions you use: each one fewer is one request fewer per
//! look-up and sweep. `validate` accepts the same regions, so every server the plugin can
//! make is in a region it scans; opt-in regions must be listed to be used.
//!
//! **Requests.** `Describe*` go as `GET /?Action=...` (resent after a dropped connection),
//! `RunInstances` and `TerminateInstances` as `POST /` with a form body (sent once). Error
//! answers map by EC2's code first (see [`ec2`]): `RequestLimitExceeded` -> rate-limited,
//! `InsufficientInstanceCapacity` and every other `Insufficient*Capacity*` -> no-capacity
//! (the zone cannot place the instance now; an order with other placements moves on),
//! EC2's own faults (`InternalError`, `Unavailable`) -> transient, `InstanceLimitExceeded` /
//! `VcpuLimitExceeded` and every other `*LimitExceeded` -> quota-exceeded, `AuthFailure` /
//! `UnauthorizedOperation` -> unauthorized (shown as code and request id only: EC2's
//! message names the account and IAM user), `InvalidInstanceID.NotFound` -> not-found,
//! other `Invalid*` -> invalid-request; messages name the code and EC2's request id. An
//! answer without EC2's error XML is not EC2's: by its status, and never not-found.
//!
//! Configuration (manifest `[config]`, all optional): `endpoint` (one URL for every region,
//! e.g. a fake of EC2 such as moto: `http://127.0.0.1:5000`; default
//! `https://ec2.<region>.amazonaws.com`); `regions` (comma-separated; see above), `sizes`
//! and `images` (offline catalogues for `validate`, see `provider_sdk::catalogue`; without
//! them any well-formed instance type and image passes and EC2 decides); `image-owners`
//! (comma-separated `DescribeImages` owners for image names: account ids, `amazon`,
//! `aws-marketplace`, `self`; default `amazon`); `page-size` (`MaxResults` of the
//! `Describe*` lists, 5-1000, default 1000); `subnet-id` (launch into this subnet, else the
//! region's default VPC); `security-group-ids` (comma-separated, else the VPC's default
//! group).
//!
//! Secrets (manifest `[secrets]`): `access-key-id` and `secret-access-key` (an IAM user's
//! or role's keys, allowed `ec2:RunInstances`, `ec2:CreateTags`, `ec2:DescribeInstances`,
//! `ec2:DescribeImages` and `ec2:TerminateInstances`); with temporary credentials also
//! `session-token`. The host requires every secret a manifest names, so the session token
//! is optional by being named only in the manifests that use it: a manifest for long-term
//! keys leaves it out and the plugin signs without one.
//!
//! # Layout
//! - [`query`]: the Query API's parameters and their encoding, filter values, vendor ids,
//!   the `ClientToken`.
//! - [`api`]: EC2's XML answers and the state mapping.
//! - [`ec2`]: the signed client, one action in one region, and the error mapping.
//! - [`validation`]: offline checks of a request, the regions served.
//! - this file: the exported `provider` interface and the EC2 calls.

mod api;
mod ec2;
mod query;
mod validation;

use std::future::Future;
use std::rc::Rc;

use provider_sdk::adopt::{self, Existing, id_order};
use provider_sdk::catalogue::parse_list;
use provider_sdk::paging;
use provider_sdk::{
    IDEMPOTENCY_LABEL, LabelledServer, PluginCatalogue, PluginInfo, Provider, ProviderError,
    Server, ServerRequest, block_on, get_config,
};

use api::Instance;
use ec2::{Ec2, Verb};
use query::{Params, VendorId, client_token, is_ami_id, literal};

/// EC2's most `MaxResults` a `Describe*` page may ask for, the default page.
const MAX_PAGE_SIZE: u32 = 1000;
/// EC2's fewest.
const MIN_PAGE_SIZE: u32 = 5;

/// Regions asked at once by `find-server` and `list-servers` (well within the host's
/// default of 16 open requests per call).
const CONCURRENT_REGIONS: usize = 8;

/// The pause before asking again about an instance EC2 says it does not know (its listing
/// is eventually consistent right after a launch).
const NOT_FOUND_RECHECK_MS: u64 = 2_000;

/// States of an instance that may still become (or be) the order's server.
const ALIVE: &[&str] = &["pending", "running", "stopping", "stopped"];
/// States of an instance not yet gone: what `list-servers` reports.
const NOT_GONE: &[&str] = &["pending", "running", "stopping", "stopped", "shutting-down"];

struct AwsPlugin;

/// Where instances are launched: `[config] subnet-id` and `security-group-ids`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Network {
    subnet_id: Option<String>,
    security_group_ids: Vec<String>,
}

impl Network {
    fn from_config() -> Self {
        Self {
            subnet_id: get_config("subnet-id")
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty()),
            security_group_ids: get_config("security-group-ids")
                .map(|ids| parse_list(&ids))
                .unwrap_or_default(),
        }
    }
}

/// `[config] page-size`: EC2's `MaxResults`, 5-1000, default 1000.
fn page_size() -> Result<u32, ProviderError> {
    let Some(text) = get_config("page-size") else {
        return Ok(MAX_PAGE_SIZE);
    };
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|size| (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(size))
        .ok_or_else(|| {
            ProviderError::Internal(format!(
                "the manifest's [config] page-size is '{text}': EC2 takes {MIN_PAGE_SIZE} to \
                 {MAX_PAGE_SIZE}"
            ))
        })
}

/// `[config] image-owners`, default `amazon`.
fn image_owners() -> Vec<String> {
    get_config("image-owners")
        .map(|owners| parse_list(&owners))
        .filter(|owners| !owners.is_empty())
        .unwrap_or_else(|| vec!["amazon".to_string()])
}

/// An answer EC2 gave that the plugin cannot read.
fn unreadable(action: &str, region: &str, why: String) -> ProviderError {
    ProviderError::Internal(format!("{action} in {region}: {why}"))
}

/// The `DescribeInstances` parameters listing the instances tagged with the idempotency
/// key (`key`: that value, else any) in `states`, one page of `page_size`.
fn tagged_params(
    key: Option<&str>,
    states: &[&str],
    page_size: u32,
    token: Option<&str>,
) -> Params {
    let mut params = Params::new("DescribeInstances");
    match key {
        Some(key) => params.filter(&format!("tag:{IDEMPOTENCY_LABEL}"), &[&literal(key)]),
        None => params.filter("tag-key", &[IDEMPOTENCY_LABEL]),
    };
    params
        .filter("instance-state-name", states)
        .add("MaxResults", page_size.to_string());
    if let Some(token) = token {
        params.add("NextToken", token);
    }
    params
}

/// Every instance in `region` carrying the idempotency tag (`key`: with that value) and in
/// one of `states`, over every page.
async fn tagged(
    ec2: &Ec2,
    region: &str,
    key: Option<&str>,
    states: &[&str],
    page_size: u32,
) -> Result<Vec<Instance>, ProviderError> {
    let instances = paging::read_all(async |token: Option<String>| {
        let params = tagged_params(key, states, page_size, token.as_deref());
        let xml = ec2.call(region, &params, Verb::Read).await?;
        api::instances(&xml).map_err(|why| unreadable(params.action(), region, why))
    })
    .await?;
    // EC2 matched the filter; the tag itself decides (a fake of EC2 may filter loosely).
    Ok(instances
        .into_iter()
        .filter(
            |instance| match (key, instance.tags.get(IDEMPOTENCY_LABEL)) {
                (Some(key), Some(value)) => value == key,
                (None, Some(_)) => true,
                (_, None) => false,
            },
        )
        .collect())
}

/// The instance `RunInstances` answered, as the order's server named `name`. A dead one
/// (shutting down, terminated) is the instance an earlier launch with this `ClientToken`
/// made: EC2 holds the token for a day after, so no retry of this key can make a server.
fn launched(made: Instance, region: &str, name: &str) -> Result<Server, ProviderError> {
    if !ALIVE.contains(&made.state.as_str()) {
        return Err(ProviderError::InvalidRequest(format!(
            "EC2 answered this order's ClientToken with instance {} in {region}, which is {}: \
             an earlier launch for the order made it and it has ended, and EC2 holds the \
             token for a day, so this order cannot make another server",
            made.id, made.state
        )));
    }
    let mut server = made.into_server(region);
    server.name = name.to_string();
    Ok(server)
}

/// The oldest of `found` (by launch time, then id), as a server of its region.
fn oldest(found: Vec<(String, Instance)>) -> Option<Server> {
    adopt::oldest(found, |(_, instance)| {
        (instance.launch_time.clone(), id_order(&instance.id))
    })
    .map(|(region, instance)| instance.into_server(&region))
}

/// `work` for every region of `regions`, [`CONCURRENT_REGIONS`] at a time; the first error
/// fails the whole (a region left out would hide its servers).
async fn each_region<T, Fut>(
    regions: &[String],
    work: impl Fn(String) -> Fut,
) -> Result<Vec<T>, ProviderError>
where
    T: 'static,
    Fut: Future<Output = Result<T, ProviderError>> + 'static,
{
    let mut results = Vec::with_capacity(regions.len());
    for batch in regions.chunks(CONCURRENT_REGIONS) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|region| wstd::runtime::spawn(work(region.clone())))
            .collect();
        for task in tasks {
            results.push(task.await?);
        }
    }
    Ok(results)
}

/// Every instance carrying the idempotency tag (`key`: with that value) in `states`, in
/// every region served, each with its region.
async fn tagged_everywhere(
    key: Option<&str>,
    states: &'static [&'static str],
) -> Result<Vec<(String, Instance)>, ProviderError> {
    let ec2 = Rc::new(Ec2::from_config()?);
    let page_size = page_size()?;
    let key: Option<Rc<str>> = key.map(Rc::from);
    let per_region = each_region(&validation::regions()?, |region| {
        let ec2 = Rc::clone(&ec2);
        let key = key.clone();
        async move {
            let found = tagged(&ec2, &region, key.as_deref(), states, page_size).await?;
            Ok(found
                .into_iter()
                .map(|instance| (region.clone(), instance))
                .collect::<Vec<_>>())
        }
    })
    .await?;
    Ok(per_region.into_iter().flatten().collect())
}

/// The image id of `image`: an AMI id as it is; a name (or name pattern) looked up among
/// the images of `[config] image-owners` in `region`, the newest available one.
async fn image_id(ec2: &Ec2, region: &str, image: &str) -> Result<String, ProviderError> {
    if is_ami_id(image) {
        return Ok(image.to_string());
    }
    let owners = image_owners();
    let page_size = page_size()?;
    let images = paging::read_all(async |token: Option<String>| {
        let mut params = Params::new("DescribeImages");
        for (n, owner) in owners.iter().enumerate() {
            params.add(format!("Owner.{}", n + 1), owner.as_str());
        }
        params
            .filter("name", &[image])
            .filter("state", &["available"])
            .add("MaxResults", page_size.to_string());
        if let Some(token) = token {
            params.add("NextToken", token);
        }
        let xml = ec2.call(region, &params, Verb::Read).await?;
        api::images(&xml).map_err(|why| unreadable(params.action(), region, why))
    })
    .await?;
    images
        .into_iter()
        .max_by(|a, b| (&a.creation_date, &a.id).cmp(&(&b.creation_date, &b.id)))
        .map(|newest| newest.id)
        .ok_or_else(|| {
            ProviderError::InvalidRequest(format!(
                "image '{image}' names no available AMI of {} in {region}",
                owners.join(", ")
            ))
        })
}

/// The `RunInstances` parameters of one order: one instance of `image_id`, the
/// `ClientToken` of its key, the user data base64-encoded, its tags (`Name`, the key, the
/// labels), the configured network.
fn run_params(
    request: &ServerRequest,
    image_id: &str,
    user_data: Option<&str>,
    network: &Network,
) -> Params {
    let mut params = Params::new("RunInstances");
    params
        .add("ImageId", image_id)
        .add("InstanceType", request.size.as_str())
        .add("MinCount", "1")
        .add("MaxCount", "1")
        .add("ClientToken", client_token(&request.idempotency_key));
    if let Some(user_data) = user_data {
        params.add("UserData", provider_sdk::base64(user_data));
    }
    if let Some(subnet) = &network.subnet_id {
        params.add("SubnetId", subnet.as_str());
    }
    for (n, group) in network.security_group_ids.iter().enumerate() {
        params.add(format!("SecurityGroupId.{}", n + 1), group.as_str());
    }
    params.add("TagSpecification.1.ResourceType", "instance");
    let tags = [
        ("Name", request.name.as_str()),
        (IDEMPOTENCY_LABEL, request.idempotency_key.as_str()),
    ]
    .into_iter()
    .chain(request.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (n, (key, value)) in tags.enumerate() {
        params
            .add(format!("TagSpecification.1.Tag.{}.Key", n + 1), key)
            .add(format!("TagSpecification.1.Tag.{}.Value", n + 1), value);
    }
    params
}

/// Calls `action` on the instance `id` (`InstanceId.1`) in its region; when EC2 answers
/// not-found, asks once more after [`NOT_FOUND_RECHECK_MS`] (an instance just launched may
/// not be listed yet).
async fn call_on_instance(
    id: &VendorId,
    action: &str,
    verb: Verb,
) -> Result<String, ProviderError> {
    let ec2 = Ec2::from_config()?;
    let mut params = Params::new(action);
    params.add("InstanceId.1", id.instance_id.as_str());
    match ec2.call(&id.region, &params, verb).await {
        Err(ProviderError::NotFound(_)) => {
            wstd::task::sleep(wstd::time::Duration::from_millis(NOT_FOUND_RECHECK_MS)).await;
            ec2.call(&id.region, &params, verb).await
        }
        other => other,
    }
}

impl Provider for AwsPlugin {
    fn info() -> PluginInfo {
        PluginInfo {
            vendor: "aws".into(),
            display_name: "Amazon EC2".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// The lists `validate` checks against ([`validation::ACCEPTED`]).
    fn catalogue() -> PluginCatalogue {
        validation::ACCEPTED.catalogue()
    }

    fn validate(request: ServerRequest) -> Result<(), ProviderError> {
        validation::check(&request)
    }

    fn create_server(request: ServerRequest) -> Result<Server, ProviderError> {
        make_server(request, Existing::MayExist)
    }

    fn create_new_server(request: ServerRequest) -> Result<Server, ProviderError> {
        make_server(request, Existing::NoneYet)
    }

    fn find_server(idempotency_key: String) -> Result<Option<Server>, ProviderError> {
        block_on(async {
            Ok(oldest(
                tagged_everywhere(Some(&idempotency_key), ALIVE).await?,
            ))
        })
    }

    fn get_server(vendor_id: String) -> Result<Server, ProviderError> {
        let id = VendorId::parse(&vendor_id)?;
        block_on(async {
            let xml = call_on_instance(&id, "DescribeInstances", Verb::Read).await?;
            api::instances(&xml)
                .map_err(|why| unreadable("DescribeInstances", &id.region, why))?
                .items
                .into_iter()
                .find(|instance| instance.id == id.instance_id)
                .map(|instance| instance.into_server(&id.region))
                .ok_or_else(|| ProviderError::NotFound(format!("EC2 does not list instance {id}")))
        })
    }

    fn delete_server(vendor_id: String) -> Result<(), ProviderError> {
        let id = VendorId::parse(&vendor_id)?;
        block_on(async {
            let xml = call_on_instance(&id, "TerminateInstances", Verb::Write).await?;
            let terminating = api::terminating(&xml)
                .map_err(|why| unreadable("TerminateInstances", &id.region, why))?;
            if terminating
                .iter()
                .any(|(instance, _)| *instance == id.instance_id)
            {
                Ok(())
            } else {
                Err(unreadable(
                    "TerminateInstances",
                    &id.region,
                    format!("the answer does not name instance {}", id.instance_id),
                ))
            }
        })
    }

    fn list_servers() -> Result<Vec<LabelledServer>, ProviderError> {
        block_on(async {
            let found = tagged_everywhere(None, NOT_GONE).await?;
            Ok(adopt::labelled(
                found,
                |(_, instance)| instance.tags.get(IDEMPOTENCY_LABEL).cloned(),
                |(region, instance)| instance.into_server(&region),
            ))
        })
    }
}

/// `create-server` (`existing`: [`Existing::MayExist`]) and `create-new-server`
/// ([`Existing::NoneYet`]: no look-up, the host knows no server carries the key yet).
fn make_server(request: ServerRequest, existing: Existing) -> Result<Server, ProviderError> {
    validation::check(&request)?;
    let user_data = validation::user_data(&request)?;
    block_on(async {
        let ec2 = Ec2::from_config()?;
        let region = request.region.as_str();
        let look_up = async || {
            let found = tagged(
                &ec2,
                region,
                Some(&request.idempotency_key),
                ALIVE,
                page_size()?,
            )
            .await?;
            Ok(oldest(
                found
                    .into_iter()
                    .map(|instance| (region.to_string(), instance))
                    .collect(),
            ))
        };
        adopt::adopt_or_create(existing, look_up, async || {
            let image = image_id(&ec2, region, &request.image).await?;
            let params = run_params(
                &request,
                &image,
                user_data.as_deref(),
                &Network::from_config(),
            );
            let xml = ec2.call(region, &params, Verb::Write).await?;
            let made = api::instances(&xml)
                .map_err(|why| unreadable("RunInstances", region, why))?
                .items
                .into_iter()
                .next()
                .ok_or_else(|| {
                    unreadable("RunInstances", region, "the answer has no instance".into())
                })?;
            launched(made, region, &request.name)
        })
        .await
    })
}

provider_sdk::export_provider!(AwsPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ServerRequest {
        ServerRequest {
            idempotency_key: "order-1".into(),
            name: "web-1".into(),
            region: "eu-west-1".into(),
            size: "t3.micro".into(),
            image: "al2023-ami-*".into(),
            ssh_keys: vec![],
            user_data: None,
            labels: vec![("team".into(), "web".into()), ("tier".into(), "".into())],
        }
    }

    /// The create's form: one instance, the key's ClientToken, base64 user data, the
    /// network, and the tags `Name`, the key, then the labels.
    #[test]
    fn run_instances_carries_every_field() {
        let network = Network {
            subnet_id: Some("subnet-0abc1234".into()),
            security_group_ids: vec!["sg-1".into(), "sg-2".into()],
        };
        let params = run_params(
            &request(),
            "ami-0abcdef1234567890",
            Some("#cloud-config\n"),
            &network,
        );
        let encoded = params.encode();
        let expected = [
            "Action=RunInstances",
            "Version=2016-11-15",
            "ImageId=ami-0abcdef1234567890",
            "InstanceType=t3.micro",
            "MinCount=1",
            "MaxCount=1",
            &format!("ClientToken={}", client_token("order-1")),
            // base64("#cloud-config\n"), its `=` percent-encoded
            "UserData=I2Nsb3VkLWNvbmZpZwo%3D",
            "SubnetId=subnet-0abc1234",
            "SecurityGroupId.1=sg-1",
            "SecurityGroupId.2=sg-2",
            "TagSpecification.1.ResourceType=instance",
            "TagSpecification.1.Tag.1.Key=Name",
            "TagSpecification.1.Tag.1.Value=web-1",
            "TagSpecification.1.Tag.2.Key=provisioner-idempotency-key",
            "TagSpecification.1.Tag.2.Value=order-1",
            "TagSpecification.1.Tag.3.Key=team",
            "TagSpecification.1.Tag.3.Value=web",
            "TagSpecification.1.Tag.4.Key=tier",
            "TagSpecification.1.Tag.4.Value=",
        ]
        .join("&");
        assert_eq!(encoded, expected);
    }

    /// Without user data or a network, neither is sent.
    #[test]
    fn run_instances_leaves_out_what_is_not_set() {
        let encoded = run_params(&request(), "ami-1e749f67", None, &Network::default()).encode();
        for absent in ["UserData", "SubnetId", "SecurityGroupId"] {
            assert!(!encoded.contains(absent), "{encoded}");
        }
    }

    /// The look-up filters on the key's tag (wildcards escaped) and live states, one page
    /// of the configured size, the next token when there is one; the sweep on the tag key.
    #[test]
    fn look_ups_filter_on_the_tag() {
        let encoded = tagged_params(Some("k*1"), ALIVE, 5, Some("tok/en=")).encode();
        assert_eq!(
            encoded,
            "Action=DescribeInstances&Version=2016-11-15\
             &Filter.1.Name=tag%3Aprovisioner-idempotency-key&Filter.1.Value.1=k%5C%2A1\
             &Filter.2.Name=instance-state-name&Filter.2.Value.1=pending\
             &Filter.2.Value.2=running&Filter.2.Value.3=stopping&Filter.2.Value.4=stopped\
             &MaxResults=5&NextToken=tok%2Fen%3D"
        );
        let sweep = tagged_params(None, NOT_GONE, 1000, None).encode();
        assert!(
            sweep.contains("Filter.1.Name=tag-key&Filter.1.Value.1=provisioner-idempotency-key"),
            "{sweep}"
        );
        assert!(sweep.contains("Filter.2.Value.5=shutting-down"), "{sweep}");
        assert!(
            !sweep.contains("terminated") && !sweep.contains("NextToken"),
            "{sweep}"
        );
    }

    /// The oldest launch wins, then the id that counted up first, whatever the region.
    #[test]
    fn the_oldest_instance_is_adopted() {
        let instance = |id: &str, launched: &str| Instance {
            id: id.into(),
            state: "running".into(),
            launch_time: launched.into(),
            ipv4: None,
            ipv6: None,
            tags: Default::default(),
        };
        let found = vec![
            (
                "us-east-1".to_string(),
                instance("i-0000000000000000b", "2025-01-02T00:00:00.000Z"),
            ),
            (
                "eu-west-1".to_string(),
                instance("i-0000000000000000c", "2025-01-01T00:00:00.000Z"),
            ),
            (
                "us-east-1".to_string(),
                instance("i-0000000000000000a", "2025-01-01T00:00:00.000Z"),
            ),
        ];
        let adopted = oldest(found).unwrap();
        assert_eq!(adopted.vendor_id, "us-east-1/i-0000000000000000a");
        assert!(oldest(Vec::new()).is_none());
    }

    /// EC2 holds a ClientToken for a day after its instance terminated and answers a
    /// repeated `RunInstances` with that dead instance: the create fails for good, saying
    /// why, instead of handing the host a server that is already gone.
    #[test]
    fn a_token_bound_to_a_dead_instance_fails_the_create() {
        let made = |state: &str| Instance {
            id: "i-0000000000000000a".into(),
            state: state.into(),
            launch_time: String::new(),
            ipv4: None,
            ipv6: None,
            tags: Default::default(),
        };
        let server = launched(made("pending"), "eu-west-1", "web-1").unwrap();
        assert_eq!(server.vendor_id, "eu-west-1/i-0000000000000000a");
        assert_eq!(server.name, "web-1");
        for state in ["shutting-down", "terminated"] {
            match launched(made(state), "eu-west-1", "web-1") {
                Err(ProviderError::InvalidRequest(why)) => {
                    assert!(why.contains(state) && why.contains("ClientToken"), "{why}")
                }
                other => panic!("{state}: {other:?}"),
            }
        }
    }
}
