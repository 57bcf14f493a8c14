//! `provisioner`: the command-line client of the order API.
//!
//! ```text
//! provisioner order create --vendor hetzner --region fsn1 --size cx22 --image ubuntu-24.04 --name web-1 --wait
//! provisioner order get|watch|cancel|delete <id>
//! provisioner order list [--status active] [--vendor hetzner] [--all]
//! provisioner vendors
//! ```
//! The API's URL and token come from `--api-url` / `PROVISIONER_API_URL` and `--token` /
//! `PROVISIONER_TOKEN` (or `--token-file` / `PROVISIONER_TOKEN_FILE`). `--output json` prints
//! the API's JSON. `watch` and `--wait` follow the order's Server-Sent Events and print each
//! step as it happens; they exit 0 when the order ends as asked (`active`, `cancelled`,
//! `deleted`) and 1 when it ends otherwise (`failed`).
//!
//! # Layout
//! - this file: the commands and what each does; they call the API through
//!   [`provisioner_api_client::ApiClient`] (token, problem+json errors, the event stream).
//! - [`show`]: how orders, lists, vendors and events are printed.

mod show;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use provisioner_api_client::ApiClient;
use serde_json::{Value, json};

use crate::show::Output;

/// The order API's command-line client.
#[derive(Debug, Parser)]
#[command(name = "provisioner", version, about)]
struct Cli {
    #[command(flatten)]
    connection: Connection,
    /// How results are printed.
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Text)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

/// Where the API is and who calls it.
#[derive(Debug, Args)]
struct Connection {
    /// The order API's base URL.
    #[arg(
        long,
        global = true,
        env = "PROVISIONER_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api_url: String,
    /// An API token (`order-api tokens create`).
    #[arg(long, global = true, env = "PROVISIONER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the API token (e.g. the local stack's `.dev/token`).
    #[arg(
        long,
        global = true,
        env = "PROVISIONER_TOKEN_FILE",
        conflicts_with = "token"
    )]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// For people.
    Text,
    /// The API's JSON, one document per command (`watch` and `--wait`: one line per event,
    /// then a line with the settled order).
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Orders: create, get, list, watch, cancel, delete.
    #[command(subcommand)]
    Order(OrderCommand),
    /// The vendors some host serves.
    Vendors,
    /// Your tenant's quotas, order rate and what it uses.
    Quotas,
}

#[derive(Debug, Subcommand)]
enum OrderCommand {
    /// Orders a server (answers at once; `--wait` follows it until it settles).
    Create(Box<CreateArgs>),
    /// One order with its event log.
    Get {
        /// The order id.
        id: String,
    },
    /// Orders, newest first.
    List(ListArgs),
    /// Follows an order live until it settles.
    Watch {
        /// The order id.
        id: String,
    },
    /// Cancels an order on its way (its server, if made, is deleted).
    Cancel {
        /// The order id.
        id: String,
        /// Follow it until it is cancelled.
        #[arg(long)]
        wait: bool,
    },
    /// Deletes an active order's server.
    Delete {
        /// The order id.
        id: String,
        /// Follow it until the server is deleted.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// The vendor (`provisioner vendors` lists them).
    #[arg(long)]
    vendor: String,
    /// The vendor's region.
    #[arg(long)]
    region: String,
    /// The vendor's server type.
    #[arg(long)]
    size: String,
    /// The vendor's image.
    #[arg(long)]
    image: String,
    /// The server's name (with `--count`, the servers are `<name>-1`, `<name>-2` ...).
    #[arg(long)]
    name: String,
    /// How many servers (1 to 100): one order, each server with its own state.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// With `--count`: when one server fails for good, remove the others and fail the order.
    #[arg(long)]
    all_or_nothing: bool,
    /// A place to move to when the one before cannot serve the order (sold out, over quota,
    /// unreachable): `vendor:region:size:image` (repeatable, tried in order after the
    /// order's own vendor, region, size and image).
    #[arg(long = "fallback", value_parser = parse_candidate)]
    fallbacks: Vec<Value>,
    /// A public SSH key or the vendor's key name (repeatable).
    #[arg(long = "ssh-key")]
    ssh_keys: Vec<String>,
    /// A file with cloud-init user data.
    #[arg(long)]
    user_data: Option<PathBuf>,
    /// A label `key=value` (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// A URL called when the order settles.
    #[arg(long)]
    webhook_url: Option<String>,
    /// Makes the request safe to repeat: the same key answers the same order.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Follow the order until it settles.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only orders in this status.
    #[arg(long)]
    status: Option<String>,
    /// Only orders for this vendor.
    #[arg(long)]
    vendor: Option<String>,
    /// Orders per page (1-200).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Every page, not only the first.
    #[arg(long)]
    all: bool,
}

/// `--fallback vendor:region:size:image`.
fn parse_candidate(text: &str) -> Result<Value, String> {
    match text.split(':').collect::<Vec<_>>()[..] {
        [vendor, region, size, image]
            if [vendor, region, size, image]
                .iter()
                .all(|part| !part.is_empty()) =>
        {
            Ok(json!({"vendor": vendor, "region": region, "size": size, "image": image}))
        }
        _ => Err(format!("'{text}' is not vendor:region:size:image")),
    }
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("'{text}' is not key=value"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let token = match (&cli.connection.token, &cli.connection.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("reading the token file {}", file.display()))?
            .trim()
            .to_string(),
        (None, None) => anyhow::bail!(
            "no API token: pass --token or --token-file, or set PROVISIONER_TOKEN \
             (make one with `order-api tokens create --tenant <name>`)"
        ),
    };
    let http = provisioner_api_client::client_builder(Some(&token))?
        .user_agent(concat!("provisioner-cli/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let api = ApiClient::with_http(&cli.connection.api_url, http);
    let out = Output::new(cli.output == Format::Json);
    match cli.command {
        Command::Vendors => {
            let vendors = api.vendors().await?;
            out.vendors(&vendors);
        }
        Command::Quotas => {
            let quotas = api.quotas().await?;
            out.quotas(&quotas);
        }
        Command::Order(OrderCommand::Create(args)) => {
            let args = *args;
            let first = json!({
                "vendor": args.vendor, "region": args.region, "size": args.size,
                "image": args.image,
            });
            let mut body = json!({
                "name": args.name, "ssh_keys": args.ssh_keys,
                "labels": args.labels.into_iter().collect::<BTreeMap<_, _>>(),
            });
            if args.fallbacks.is_empty() {
                for field in ["vendor", "region", "size", "image"] {
                    body[field] = first[field].clone();
                }
            } else {
                let placement: Vec<Value> = std::iter::once(first).chain(args.fallbacks).collect();
                body["placement"] = json!(placement);
            }
            if let Some(file) = args.user_data {
                body["user_data"] = json!(
                    std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?
                );
            }
            if let Some(url) = args.webhook_url {
                body["webhook_url"] = json!(url);
            }
            if args.count != 1 {
                body["count"] = json!(args.count);
            }
            if args.all_or_nothing {
                body["all_or_nothing"] = json!(true);
            }
            let order = api
                .create_order(&body, args.idempotency_key.as_deref())
                .await?;
            if args.wait {
                out.accepted(&order);
                return follow(&api, &out, id_of(&order)?, &["active"]).await;
            }
            out.order(&order);
        }
        Command::Order(OrderCommand::Get { id }) => {
            out.order(&api.order(&id).await?);
        }
        Command::Order(OrderCommand::List(args)) => {
            let mut query = format!("limit={}", args.limit);
            for (name, value) in [("status", &args.status), ("vendor", &args.vendor)] {
                if let Some(value) = value {
                    query.push_str(&format!("&{name}={value}"));
                }
            }
            let mut orders: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut page_query = query.clone();
                if let Some(cursor) = &cursor {
                    page_query.push_str(&format!("&cursor={cursor}"));
                }
                let page = api.list_orders(&page_query).await?;
                orders.extend(page["orders"].as_array().into_iter().flatten().cloned());
                match page["next_cursor"].as_str() {
                    Some(next) if args.all => cursor = Some(next.to_string()),
                    _ => break,
                }
            }
            out.orders(&orders);
        }
        Command::Order(OrderCommand::Watch { id }) => {
            return follow(&api, &out, &id, &["active", "cancelled", "deleted"]).await;
        }
        Command::Order(OrderCommand::Cancel { id, wait }) => {
            let order = api.cancel_order(&id).await?;
            return show_or_follow(&api, &out, &order, (&id, wait), &["cancelled"]).await;
        }
        Command::Order(OrderCommand::Delete { id, wait }) => {
            let order = api.delete_order(&id).await?;
            return show_or_follow(&api, &out, &order, (&id, wait), &["deleted"]).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn id_of(order: &Value) -> anyhow::Result<&str> {
    order["id"]
        .as_str()
        .context("the API answered an order without an id")
}

/// An order order-api accepted a change of: with `wait`, shown as accepted and followed
/// (see [`follow`]); without, shown as it is now.
async fn show_or_follow(
    api: &ApiClient,
    out: &Output,
    order: &Value,
    (id, wait): (&str, bool),
    wanted: &[&str],
) -> anyhow::Result<ExitCode> {
    if wait {
        out.accepted(order);
        return follow(api, out, id, wanted).await;
    }
    out.order(order);
    Ok(ExitCode::SUCCESS)
}

/// Follows the order's events until it settles; success when it ends in one of `wanted`.
async fn follow(
    api: &ApiClient,
    out: &Output,
    id: &str,
    wanted: &[&str],
) -> anyhow::Result<ExitCode> {
    let settled = api.follow(id, |event| out.event(event)).await?;
    out.settled(&settled);
    let status = settled["status"].as_str().unwrap_or_default();
    Ok(if wanted.contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
