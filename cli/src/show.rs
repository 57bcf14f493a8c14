//! How results are printed: readable text, or the API's JSON with `--output json`.

use serde_json::Value;

/// The chosen output.
pub struct Output {
    json: bool,
}

impl Output {
    /// JSON (`true`) or text.
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    fn print_json(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    }

    /// One order, with its event log when it has one.
    pub fn order(&self, order: &Value) {
        if self.json {
            return self.print_json(order);
        }
        let field = |name: &str| order[name].as_str().unwrap_or("-").to_string();
        println!("order    {}", field("id"));
        println!("status   {}", field("status"));
        println!(
            "server   {} {} {} {} at {}",
            field("name"),
            field("size"),
            field("image"),
            field("region"),
            field("vendor")
        );
        if let Some(server) = order["server"].as_object() {
            println!(
                "vendor   id {} {} ipv4 {} ipv6 {}",
                server["vendor_id"].as_str().unwrap_or("-"),
                server["status"].as_str().unwrap_or("-"),
                server["ipv4"].as_str().unwrap_or("-"),
                server["ipv6"].as_str().unwrap_or("-")
            );
        }
        if let Some(servers) = order["servers"].as_array() {
            println!("servers");
            for server in servers {
                let made = &server["server"];
                println!(
                    "  {:<24} {:<16} {} {} {} {}",
                    server["name"].as_str().unwrap_or("-"),
                    server["status"].as_str().unwrap_or("-"),
                    server["vendor"].as_str().unwrap_or("-"),
                    server["region"].as_str().unwrap_or("-"),
                    made["ipv4"].as_str().unwrap_or("-"),
                    server["fault"]["code"].as_str().unwrap_or("")
                );
            }
        }
        if let Some(fault) = order["fault"].as_object() {
            println!(
                "fault    {}: {}",
                fault["code"].as_str().unwrap_or("-"),
                fault["message"].as_str().unwrap_or("-")
            );
        }
        if let Some(events) = order["events"].as_array() {
            println!("events");
            for event in events {
                println!("  {}", event_line(event));
            }
        }
    }

    /// The answer to a request followed with `--wait`: one line (text) or nothing (JSON:
    /// only the events and the settled order are printed).
    pub fn accepted(&self, order: &Value) {
        if !self.json {
            println!(
                "order {} is {}",
                order["id"].as_str().unwrap_or("-"),
                order["status"].as_str().unwrap_or("-")
            );
        }
    }

    /// One event of a followed order, as it happens.
    pub fn event(&self, event: &Value) {
        if self.json {
            println!("{event}");
        } else {
            println!("  {}", event_line(event));
        }
    }

    /// The order a followed stream ended with (JSON: one line, after the events' lines).
    pub fn settled(&self, order: &Value) {
        if self.json {
            println!("{order}");
            return;
        }
        let status = order["status"].as_str().unwrap_or("-");
        match (order["server"].as_object(), order["fault"].as_object()) {
            (_, Some(fault)) if status == "failed" => println!(
                "{status}: {}: {}",
                fault["code"].as_str().unwrap_or("-"),
                fault["message"].as_str().unwrap_or("-")
            ),
            (Some(server), _) => println!(
                "{status}: server {} ipv4 {}",
                server["vendor_id"].as_str().unwrap_or("-"),
                server["ipv4"].as_str().unwrap_or("-")
            ),
            _ => println!("{status}"),
        }
    }

    /// A list of orders.
    pub fn orders(&self, orders: &[Value]) {
        if self.json {
            return self.print_json(&Value::Array(orders.to_vec()));
        }
        println!(
            "{:<36}  {:<12}  {:<12}  {:<20}  created",
            "id", "status", "vendor", "name"
        );
        for order in orders {
            println!(
                "{:<36}  {:<12}  {:<12}  {:<20}  {}",
                order["id"].as_str().unwrap_or("-"),
                order["status"].as_str().unwrap_or("-"),
                order["vendor"].as_str().unwrap_or("-"),
                order["name"].as_str().unwrap_or("-"),
                order["created_at"].as_str().unwrap_or("-")
            );
        }
    }

    /// The vendors.
    pub fn vendors(&self, answer: &Value) {
        if self.json {
            return self.print_json(answer);
        }
        for vendor in answer["vendors"].as_array().into_iter().flatten() {
            println!(
                "{:<14} {} (plugin {}, {} host(s))",
                vendor["vendor"].as_str().unwrap_or("-"),
                vendor["display_name"].as_str().unwrap_or("-"),
                vendor["plugin_version"].as_str().unwrap_or("-"),
                vendor["hosts"].as_array().map_or(0, Vec::len)
            );
        }
    }

    /// A tenant's quotas: each scope's usage against its limits, and the order rate.
    pub fn quotas(&self, answer: &Value) {
        if self.json {
            return self.print_json(answer);
        }
        let figure = |scope: &Value, usage: &str, limit: &str| {
            let used = scope["usage"][usage].as_u64().unwrap_or(0);
            match scope["limits"][limit].as_u64() {
                Some(limit) => format!("{used}/{limit}"),
                None => format!("{used}"),
            }
        };
        println!(
            "{:<14} {:>14} {:>18}",
            "vendor", "live servers", "orders in flight"
        );
        let mut scopes = vec![("(all)".to_string(), &answer["all_vendors"])];
        if let Some(vendors) = answer["vendors"].as_object() {
            scopes.extend(
                vendors
                    .iter()
                    .map(|(vendor, scope)| (vendor.clone(), scope)),
            );
        }
        for (name, scope) in scopes {
            println!(
                "{:<14} {:>14} {:>18}",
                name,
                figure(scope, "live_servers", "max_live_servers"),
                figure(scope, "orders_in_flight", "max_orders_in_flight")
            );
        }
        match answer["rate"].as_object() {
            Some(rate) => println!(
                "order rate: {} per second, bursts of {} ({})",
                rate["per_second"],
                rate["burst"],
                answer["rate_source"].as_str().unwrap_or("-")
            ),
            None => println!("order rate: not limited"),
        }
    }
}

/// `12:00:01  provisioning  vendor accepted the server ...`
fn event_line(event: &Value) -> String {
    let at = event["at"]
        .as_str()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "--:--:--".into());
    format!(
        "{at}  {:<12}  {}",
        event["status"].as_str().unwrap_or("-"),
        event["message"].as_str().unwrap_or("-")
    )
}
