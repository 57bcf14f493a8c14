//! Adopt or create: what `create-server` does at every vendor.
//!
//! The host may call `create-server` again for one order (a redelivery, a lost answer, a
//! crash between the vendor's answer and the host's record), so a plugin first looks up
//! the servers carrying the order's idempotency key and adopts one; only when there is none
//! does it make a server. If a key ever has several servers (a duplicate made by an older
//! plugin, another tool, a vendor that lost its own answer), every retry must adopt the
//! same one: the oldest, by the vendor's creation time, then by id ([`oldest`], [`id_order`]),
//! whatever order the vendor lists them in.
//!
//! [`adopt_or_create`] is that protocol, once: the plugin gives it its vendor's look-up (the
//! oldest server carrying the key, or none) and its vendor's create, and keeps both. The
//! same body serves `create-new-server` (WIT 0.6), where the host knows that no server can
//! carry the key yet (an order's first create, its first copy, first attempt): given
//! [`Existing::NoneYet`], it skips the look-up, one vendor request fewer per order.
//! [`labelled`] lists the servers carrying a key, each with it, as `list-servers` answers;
//! [`labels_and_key`] is what a created server carries: the order's labels and the key.
//!
//! ```ignore
//! use provider_sdk::adopt::{self, id_order};
//! async fn find(api: &ApiClient, key: &str) -> Result<Option<Server>, ProviderError> {
//!     let servers = list_all(api, &key_filter(key)).await?;
//!     Ok(adopt::oldest(servers, |s| (s.created_at.clone(), id_order(&s.id))).map(to_server))
//! }
//! // in create_server (Existing::MayExist) and create_new_server (Existing::NoneYet):
//! adopt::adopt_or_create(
//!     existing,
//!     async || find(&api, &request.idempotency_key).await,
//!     async || {
//!         let created: ServerEnvelope =
//!             api.call(HttpMethod::POST, "/servers", Some(&body)).await?;
//!         Ok(to_server(created.server))
//!     },
//! )
//! .await
//! ```

use std::collections::BTreeMap;

use crate::{
    IDEMPOTENCY_LABEL, LabelledServer, LogLevel, ProviderError, Server, ServerRequest, log,
};

/// The oldest of `servers` by `age` (a creation time as the vendor writes it, then an id:
/// RFC 3339 times in UTC sort as text; give ids through [`id_order`] so that `srv-9` comes
/// before `srv-10`). Among equals, the first listed.
pub fn oldest<T, K: Ord>(
    servers: impl IntoIterator<Item = T>,
    age: impl FnMut(&T) -> K,
) -> Option<T> {
    servers.into_iter().min_by_key(age)
}

/// An id's place among ids that count up: the shorter first, then by text (`srv-9`,
/// `srv-10`; `99`, `100`). Ids that do not count up (UUIDs) still get one fixed order.
pub fn id_order(id: &str) -> (usize, String) {
    (id.len(), id.to_string())
}

/// Whether a server made earlier for the request's key may exist: which of the two create
/// exports is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// `create-server`: an earlier try may have made the server (a redelivery, a lost
    /// answer, a retry): look it up first and adopt it.
    MayExist,
    /// `create-new-server`: the host calls it only where no server can carry the key yet,
    /// so the look-up is skipped.
    NoneYet,
}

/// What `create-server` and `create-new-server` do at every vendor. With
/// [`Existing::MayExist`], `find` (the vendor's look-up of the oldest server carrying the
/// order's idempotency key) runs first, and the server it finds is adopted; only when it
/// finds none does `create` (the vendor's create) make one. With [`Existing::NoneYet`],
/// `create` runs alone. Either is logged with its vendor id; an error of either is the
/// call's.
pub async fn adopt_or_create(
    existing: Existing,
    find: impl AsyncFnOnce() -> Result<Option<Server>, ProviderError>,
    create: impl AsyncFnOnce() -> Result<Server, ProviderError>,
) -> Result<Server, ProviderError> {
    let found = match existing {
        Existing::MayExist => find().await?,
        Existing::NoneYet => None,
    };
    if let Some(server) = found {
        log(
            LogLevel::Info,
            &format!(
                "adopting server {} made earlier for this idempotency key",
                server.vendor_id
            ),
        );
        return Ok(server);
    }
    let server = create().await?;
    log(
        LogLevel::Info,
        &format!("created server {}", server.vendor_id),
    );
    Ok(server)
}

/// The servers among `servers` that carry an idempotency key, each with its key: what
/// `list-servers` answers. `key_of` takes a server's key out of it (its label, tag or
/// metadata entry [`crate::IDEMPOTENCY_LABEL`]; none: the server is left out), then
/// `to_server` gives the server in the host's terms.
pub fn labelled<T>(
    servers: impl IntoIterator<Item = T>,
    mut key_of: impl FnMut(&mut T) -> Option<String>,
    mut to_server: impl FnMut(T) -> Server,
) -> Vec<LabelledServer> {
    servers
        .into_iter()
        .filter_map(|mut server| {
            let idempotency_key = key_of(&mut server)?;
            Some(LabelledServer {
                idempotency_key,
                server: to_server(server),
            })
        })
        .collect()
}

/// The labels a server made for `request` carries: the order's labels and the idempotency
/// key under [`IDEMPOTENCY_LABEL`], inserted last so that an order's own label of that name
/// cannot replace it.
pub fn labels_and_key(request: &ServerRequest) -> BTreeMap<&str, &str> {
    let mut labels: BTreeMap<&str, &str> = request
        .labels
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    labels.insert(IDEMPOTENCY_LABEL, &request.idempotency_key);
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The earliest creation time wins; a tie goes to the id that counted up first, not
    /// to the text order of the ids, nor to the vendor's listing order.
    #[test]
    fn the_oldest_wins_whatever_the_listing_order() {
        let listed = [
            ("2025-01-31T12:00:01Z", "srv-2"),
            ("2025-01-31T12:00:00Z", "srv-10"),
            ("2025-01-31T12:00:00Z", "srv-9"),
        ];
        let pick = oldest(listed, |(created, id)| (created.to_string(), id_order(id)));
        assert_eq!(pick, Some(("2025-01-31T12:00:00Z", "srv-9")));
        let newest_first = [listed[0], listed[1]];
        let pick = oldest(newest_first, |(created, id)| {
            (created.to_string(), id_order(id))
        });
        assert_eq!(pick, Some(("2025-01-31T12:00:00Z", "srv-10")));
        assert_eq!(oldest(Vec::<u8>::new(), |n| *n), None);
    }

    /// Servers without a key are left out; the others keep their order and get their key.
    #[test]
    fn only_servers_carrying_a_key_are_listed() {
        use crate::ServerStatus;
        let listed = [("a", Some("k-1")), ("b", None), ("c", Some("k-2"))];
        let server = |(id, _): (&str, Option<&str>)| Server {
            vendor_id: id.into(),
            name: id.into(),
            status: ServerStatus::Running,
            ipv4: None,
            ipv6: None,
        };
        let labelled = labelled(listed, |(_, key)| key.map(String::from), server);
        let shown: Vec<(&str, &str)> = labelled
            .iter()
            .map(|l| (l.idempotency_key.as_str(), l.server.vendor_id.as_str()))
            .collect();
        assert_eq!(shown, [("k-1", "a"), ("k-2", "c")]);
    }

    /// The order's labels go as they are; the key goes under its own label, whatever label
    /// of that name the order gave.
    #[test]
    fn a_server_carries_the_labels_and_the_key() {
        let request = ServerRequest {
            idempotency_key: "k-1".into(),
            name: "web".into(),
            region: "r".into(),
            size: "s".into(),
            image: "i".into(),
            ssh_keys: Vec::new(),
            user_data: None,
            labels: vec![
                ("team".into(), "web".into()),
                (IDEMPOTENCY_LABEL.into(), "forged".into()),
            ],
        };
        let labels = labels_and_key(&request);
        assert_eq!(
            labels,
            BTreeMap::from([("team", "web"), (IDEMPOTENCY_LABEL, "k-1")])
        );
    }

    /// Among full equals the first listed is kept (the same one on every call).
    #[test]
    fn equals_keep_the_listing_order() {
        let listed = [(1, 'a'), (0, 'b'), (0, 'c')];
        assert_eq!(oldest(listed, |(age, _)| *age), Some((0, 'b')));
    }
}
