//! The `idempotency` suite: one server per idempotency key. The same key created twice
//! answers one server, which `find-server` adopts; another key with the same name gets a
//! server of its own; the servers of an order for several, whose keys differ only at their
//! end, created at once, are each found by their own key; `create-new-server` (WIT 0.6)
//! makes a server carrying its key without looking the key up first.

use provisioner_host::bindings::types::{Server, ServerRequest};

use super::{Check, NO_SHAPE, Recorder, Verdict, delete_all_of_run, servers_at_vendor};
use crate::kit::Kit;
use crate::options::Suite;
use crate::shown::{shown, shown_error};

const SAME_KEY: Check = Check {
    suite: Suite::Idempotency,
    name: "same-key",
    description: "create twice with the same key -> the same server, one at the vendor",
};
const FIND_ADOPTS: Check = Check {
    suite: Suite::Idempotency,
    name: "find-adopts",
    description: "find-server with the key finds that server",
};
const SAME_NAME: Check = Check {
    suite: Suite::Idempotency,
    name: "same-name",
    description: "two keys, one name -> two servers (one tenant's name never blocks \
                  another's); the first key still finds the first",
};
const SIBLINGS: Check = Check {
    suite: Suite::Idempotency,
    name: "siblings",
    description: "an order for several servers: three keys that differ only in their last \
                  characters, created at once as <name>-1..3 -> three servers, each found by \
                  its own key",
};

const CREATE_NEW: Check = Check {
    suite: Suite::Idempotency,
    name: "create-new",
    description: "create-new-server (WIT 0.6) with a new key -> a server carrying the key, \
                  made with fewer vendor requests than create-server's (no look-up); \
                  create-server with that key then adopts it, the only one at the vendor",
};

/// The suite's checks, in the order they run.
const CHECKS: [Check; 5] = [SAME_KEY, FIND_ADOPTS, SAME_NAME, SIBLINGS, CREATE_NEW];

/// Same key twice -> one server; find-server adopts it. Whether it made a server.
pub(super) async fn idempotency(kit: &Kit, r: &mut Recorder<'_>) -> bool {
    if kit.shape.is_none() {
        r.skip_all(&CHECKS, NO_SHAPE);
        return false;
    }
    let key = kit.new_key();
    let request = kit.request(&key);
    match same_key(kit, r, &request).await {
        None => r.skip_all(&[FIND_ADOPTS, SAME_NAME], "needs idempotency.same-key"),
        Some(first) => {
            r.check(FIND_ADOPTS, find_adopts(kit, &key, &first)).await;
            r.check(SAME_NAME, same_name(kit, &request, &first)).await;
        }
    }
    r.check(SIBLINGS, siblings(kit)).await;
    match kit.plugin.wit_version() {
        version if version.has_create_new() => {
            r.check(CREATE_NEW, create_new(kit)).await;
        }
        version => r.skip(
            CREATE_NEW,
            &format!(
                "WIT {version} has no create-new-server: the host calls create-server for \
                 every create"
            ),
        ),
    }
    delete_all_of_run(kit).await;
    true
}

/// `idempotency.same-key`: `request` created twice in one order answers one server, the
/// only one with its key at the vendor; the first server answered, if both creates
/// answered one.
async fn same_key(kit: &Kit, r: &mut Recorder<'_>, request: &ServerRequest) -> Option<Server> {
    let mut made = None;
    r.check(SAME_KEY, async {
        let order = uuid::Uuid::new_v4();
        let first = kit.create(order, request).await;
        let second = kit.create(order, request).await;
        let (a, b) = match (&first, &second) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                return Err(format!(
                    "expected two answers with one server, got {} then {}",
                    shown(&first),
                    shown(&second)
                ));
            }
        };
        made = Some(a.clone());
        if a.vendor_id != b.vendor_id {
            return Err(format!(
                "the second create made server {} beside {}: create must look its key up first",
                b.vendor_id, a.vendor_id
            ));
        }
        only_server_with_key(kit, &request.idempotency_key, a).await
    })
    .await;
    made
}

/// Whether `server` is the only one with `key`: by the vendor's own count, else by the
/// plugin's listing, else unjudged (a pass saying why).
async fn only_server_with_key(kit: &Kit, key: &str, server: &Server) -> Verdict {
    match servers_at_vendor(kit, key).await? {
        Some((1, how)) => Ok(format!(
            "both answered server {}, the only one with the key ({how})",
            server.vendor_id
        )),
        Some((n, how)) => Err(format!(
            "expected one server with key {key} at the vendor, found {n} ({how}): create must \
             look its key up first"
        )),
        None => match kit.list().await {
            Ok(Some(servers)) => {
                match servers.iter().filter(|s| s.idempotency_key == key).count() {
                    1 => Ok(format!(
                        "both answered server {}, the only one the plugin lists with the key \
                         (counted by the plugin itself: the vendor's own count needs \
                         --vendor-sim or --fault-proxy)",
                        server.vendor_id
                    )),
                    n => Err(format!(
                        "expected one server with key {key}, the plugin lists {n}"
                    )),
                }
            }
            _ => Ok(format!(
                "both answered server {} (the servers at the vendor were not counted: the \
                 plugin cannot list them, and the vendor's side needs --vendor-sim or \
                 --fault-proxy)",
                server.vendor_id
            )),
        },
    }
}

/// `idempotency.find-adopts`: `find-server` of `key` finds `server`.
async fn find_adopts(kit: &Kit, key: &str, server: &Server) -> Verdict {
    let result = kit.find(key).await;
    match &result {
        Ok(Some(found)) if found.vendor_id == server.vendor_id => {
            Ok(format!("found server {}", found.vendor_id))
        }
        _ => Err(format!(
            "expected server {} for key {key}, got {}",
            server.vendor_id,
            shown(&result)
        )),
    }
}

/// `idempotency.same-name`: another key with the name `request` asked for gets a server of
/// its own, and `request` still finds `first`, its server.
async fn same_name(kit: &Kit, request: &ServerRequest, first: &Server) -> Verdict {
    // Another key with the name the first server was asked for.
    let other = kit.new_key();
    let mut second_request = kit.request(&other);
    second_request.name = request.name.clone();
    let second = match kit.create(uuid::Uuid::new_v4(), &second_request).await {
        Ok(server) => server,
        Err(error) => {
            return Err(format!(
                "expected a second server for another key with the name {:?}, got {}: all \
                 tenants share one vendor account, so a plugin whose vendor requires unique \
                 names must make the vendor-side name unique per key \
                 (provider_sdk::unique_name)",
                request.name,
                shown_error(&error)
            ));
        }
    };
    if second.vendor_id == first.vendor_id {
        return Err(format!(
            "another key adopted server {} of the first key: look up by the key, not by the \
             name",
            first.vendor_id
        ));
    }
    let again = kit.create(uuid::Uuid::new_v4(), request).await;
    match &again {
        Ok(server) if server.vendor_id == first.vendor_id => Ok(format!(
            "servers {} ({}) and {} ({}); the first key found {} again",
            first.vendor_id, first.name, second.vendor_id, second.name, server.vendor_id
        )),
        _ => Err(format!(
            "expected the first key to find server {} again, got {}",
            first.vendor_id,
            shown(&again)
        )),
    }
}

/// `idempotency.siblings`: the servers of an order for several (`count`) get keys that
/// share all but their last characters and names `<name>-<n>`, and are created at once.
async fn siblings(kit: &Kit) -> Verdict {
    const SIBLING_COUNT: usize = 3;
    let keys: Vec<String> = (0..SIBLING_COUNT).map(|_| kit.new_key()).collect();
    let base = kit.request(&keys[0]).name;
    let requests: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| {
            let mut request = kit.request(key);
            request.name = format!("{base}-{}", index + 1);
            request
        })
        .collect();
    let created = futures_util::future::join_all(
        requests
            .iter()
            .map(|request| kit.create(uuid::Uuid::new_v4(), request)),
    )
    .await;
    let mut servers = Vec::with_capacity(SIBLING_COUNT);
    for (request, result) in requests.iter().zip(&created) {
        match result {
            Ok(server) => servers.push(server),
            Err(error) => {
                return Err(format!(
                    "expected a server for key {} ({}), got {}",
                    request.idempotency_key,
                    request.name,
                    shown_error(error)
                ));
            }
        }
    }
    let mut ids: Vec<&str> = servers.iter().map(|s| s.vendor_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != SIBLING_COUNT {
        let answered: Vec<String> = requests
            .iter()
            .zip(&servers)
            .map(|(request, server)| format!("{} -> {}", request.idempotency_key, server.vendor_id))
            .collect();
        return Err(format!(
            "expected {SIBLING_COUNT} servers, one per key, got {}: keys that differ only at their \
             end were taken for one (compare the whole key, never a prefix)",
            answered.join(", ")
        ));
    }
    for (request, server) in requests.iter().zip(&servers) {
        let key = &request.idempotency_key;
        let found = kit.find(key).await;
        match &found {
            Ok(Some(found)) if found.vendor_id == server.vendor_id => {}
            // Created at once, each sibling may have got a server of its own and still be
            // looked up as another: the same flaw, seen from the other side.
            Ok(Some(other)) if servers.iter().any(|s| s.vendor_id == other.vendor_id) => {
                return Err(format!(
                    "expected find-server {key} to find server {}, got {}, another key's: keys \
                     that differ only at their end were taken for one (compare the whole key, \
                     never a prefix)",
                    server.vendor_id, other.vendor_id
                ));
            }
            _ => {
                return Err(format!(
                    "expected find-server {key} to find server {}, got {}",
                    server.vendor_id,
                    shown(&found)
                ));
            }
        }
    }
    let made: Vec<String> = servers
        .iter()
        .map(|server| format!("{} ({})", server.vendor_id, server.name))
        .collect();
    Ok(format!(
        "servers {}, each found by its own key",
        made.join(", ")
    ))
}

/// `idempotency.create-new`: `create-new-server` makes a server for a new key with fewer
/// vendor requests than `create-server` makes for another new key (it skips the look-up;
/// the host calls it only where no server can carry the key yet), and the server carries
/// the key: `create-server` with it adopts that server, the only one at the vendor.
async fn create_new(kit: &Kit) -> Verdict {
    // One create first, so that both calls compared find the plugin's cache (a login
    // token, an image's id) as warm as the other.
    let warm_up = kit.request(&kit.new_key());
    kit.create(uuid::Uuid::new_v4(), &warm_up)
        .await
        .map_err(|error| {
            format!(
                "create-server failed before the comparison: {}",
                shown_error(&error)
            )
        })?;
    let key = kit.new_key();
    let request = kit.request(&key);
    let before = kit.plugin.outbound_requests();
    let made = kit.create_new(uuid::Uuid::new_v4(), &request).await;
    let new_requests = kit.plugin.outbound_requests() - before;
    let made = made.map_err(|error| {
        format!(
            "expected a server from create-new-server, got {}",
            shown_error(&error)
        )
    })?;
    let before = kit.plugin.outbound_requests();
    let other = kit
        .create(uuid::Uuid::new_v4(), &kit.request(&kit.new_key()))
        .await;
    let create_requests = kit.plugin.outbound_requests() - before;
    other.map_err(|error| format!("create-server failed: {}", shown_error(&error)))?;
    if new_requests >= create_requests {
        return Err(format!(
            "create-new-server made {new_requests} vendor requests, create-server \
             {create_requests}: create-new-server must skip the look-up (the host calls it \
             only where no server can carry the key yet)"
        ));
    }
    let again = kit.create(uuid::Uuid::new_v4(), &request).await;
    match &again {
        Ok(server) if server.vendor_id == made.vendor_id => {}
        _ => {
            return Err(format!(
                "create-server with the key of create-new-server's server {} answered {}: \
                 the server create-new-server makes must carry the key as create-server's do",
                made.vendor_id,
                shown(&again)
            ));
        }
    }
    let only = only_server_with_key(kit, &key, &made).await?;
    Ok(format!(
        "create-new-server: {new_requests} vendor requests, create-server: \
         {create_requests}; {only}"
    ))
}
