//! The `contract` suite: the plugin loads as the host would load it (`contract.world`, the
//! step every run begins with, whichever suites it runs), says who it is (`info`), and
//! `validate` judges requests offline: it accepts the run's request, refuses bad fields with
//! `invalid-request`, makes no network request; `catalogue` agrees with it
//! ([`crate::catalogue`]).

use provisioner_host::bindings::WitVersion;
use provisioner_host::bindings::types::{ProviderError, ServerRequest};
use provisioner_host::runtime::CallError;

use super::{Check, NO_SHAPE, Recorder, Verdict};
use crate::kit::{Kit, ServerShape};
use crate::options::{KitOptions, Suite};
use crate::shown::shown;

const WORLD: Check = Check {
    suite: Suite::Contract,
    name: "world",
    description: "the component implements provisioner:provider at a version the host loads",
};
const INFO: Check = Check {
    suite: Suite::Contract,
    name: "info",
    description: "info names the manifest's vendor, a display name and a version",
};
const VALIDATE_ACCEPTS: Check = Check {
    suite: Suite::Contract,
    name: "validate-accepts",
    description: "validate accepts a valid request",
};
const VALIDATE_REFUSALS: Check = Check {
    suite: Suite::Contract,
    name: "validate-refusals",
    description: "validate refuses an empty name and unknown region, size, image with \
                  invalid-request",
};
const VALIDATE_OFFLINE: Check = Check {
    suite: Suite::Contract,
    name: "validate-offline",
    description: "validate makes no network request",
};
const CATALOGUE: Check = Check {
    suite: Suite::Contract,
    name: "catalogue",
    description: "catalogue (WIT 0.5) answers without network I/O, every value it lists \
                  passes validate in an otherwise valid request, and a value a listed field \
                  does not list is refused with invalid-request",
};

/// The checks that need the run's shape, as a run without one reports them skipped (its
/// `validate-refusals` described without "with invalid-request").
const NEED_SHAPE: [Check; 4] = [
    VALIDATE_ACCEPTS,
    Check {
        description: "validate refuses an empty name and unknown region, size, image",
        ..VALIDATE_REFUSALS
    },
    VALIDATE_OFFLINE,
    CATALOGUE,
];

/// Sets one field of a request (the refusal checks).
type SetField = fn(&mut ServerRequest, &str);

/// `contract.world`: the plugin loaded from the run's options as the host would load it;
/// `None` when it did not load (the check then failed, saying why).
pub(super) async fn world(options: KitOptions, r: &mut Recorder<'_>) -> Option<Kit> {
    let mut loaded = None;
    r.check(WORLD, async {
        match Kit::load(options).await {
            Ok(kit) => {
                let version = kit.plugin.wit_version();
                loaded = Some(kit);
                Ok(format!(
                    "implements provisioner:provider {version}{}",
                    older_version_note(version)
                ))
            }
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    loaded
}

/// What a plugin built against an older WIT version lacks, for `contract.world`'s detail.
fn older_version_note(version: WitVersion) -> &'static str {
    match version {
        WitVersion::V0_6 => "",
        WitVersion::V0_5 => {
            "; 0.5 has no create-new-server: an order's first create looks its key up \
             first, one vendor request more per order (rebuild against 0.6)"
        }
        WitVersion::V0_4 => {
            "; 0.4 has no catalogue: the console's order form cannot offer its regions, \
             sizes and images (rebuild against 0.6)"
        }
        WitVersion::V0_3 => {
            "; 0.3 has no no-capacity error: the plugin reports a capacity shortage as \
             transient, which no order moves on from (rebuild against 0.6)"
        }
        WitVersion::V0_2 => {
            "; 0.2 has no cache: the plugin fetches what it would keep between calls every \
             time (rebuild against 0.6)"
        }
        WitVersion::V0_1 => {
            "; 0.1 has no list-servers: its vendor cannot be swept for orphans (rebuild \
             against 0.4)"
        }
    }
}

/// The `contract` suite after `world`: `info`, then `validate` (accepts, refusals, offline)
/// and `catalogue`, which need the run's shape.
pub(super) async fn contract(kit: &Kit, r: &mut Recorder<'_>) {
    r.check(INFO, info(kit)).await;
    let before = kit.plugin.outbound_requests();
    let Some(shape) = &kit.shape else {
        r.skip_all(&NEED_SHAPE, NO_SHAPE);
        return;
    };
    let key = kit.new_key();
    r.check(VALIDATE_ACCEPTS, validate_accepts(kit, shape, &key))
        .await;
    r.check(VALIDATE_REFUSALS, validate_refusals(kit, &key))
        .await;
    r.check(VALIDATE_OFFLINE, validate_offline(kit, before))
        .await;
    r.check(CATALOGUE, crate::catalogue::agrees_with_validate(kit))
        .await;
}

/// `contract.info`: a display name and a version beside the vendor.
async fn info(kit: &Kit) -> Verdict {
    let info = kit.plugin.info_cached();
    if info.display_name.trim().is_empty() || info.version.trim().is_empty() {
        return Err(format!(
            "expected a display name and a version, got display name {:?}, version {:?}",
            info.display_name, info.version
        ));
    }
    Ok(format!(
        "vendor {}, \"{}\", version {}",
        info.vendor, info.display_name, info.version
    ))
}

/// `contract.validate-accepts`: the run's request, of its shape, passes `validate`.
async fn validate_accepts(kit: &Kit, shape: &ServerShape, key: &str) -> Verdict {
    let result = kit.plugin.validate(&kit.request(key)).await;
    match result {
        Ok(()) => Ok(format!(
            "accepted {} / {} / {}",
            shape.region, shape.size, shape.image
        )),
        Err(_) => Err(format!(
            "expected Ok for region {}, size {}, image {}; got {}",
            shape.region,
            shape.size,
            shape.image,
            shown(&result)
        )),
    }
}

/// `contract.validate-refusals`: an empty name and an unknown region, size and image are
/// each refused with `invalid-request`.
async fn validate_refusals(kit: &Kit, key: &str) -> Verdict {
    let mut refused = Vec::new();
    let mut wrong = Vec::new();
    let cases: [(&str, &str, SetField); 4] = [
        ("name", "", |r, v| r.name = v.into()),
        ("region", "conformance-unknown-region", |r, v| {
            r.region = v.into()
        }),
        ("size", "conformance-unknown-size", |r, v| r.size = v.into()),
        ("image", "conformance-unknown-image", |r, v| {
            r.image = v.into()
        }),
    ];
    for (field, value, set) in cases {
        let mut request = kit.request(key);
        set(&mut request, value);
        let result = kit.plugin.validate(&request).await;
        match &result {
            Err(CallError::Provider(ProviderError::InvalidRequest(_))) => refused.push(field),
            _ => wrong.push(format!(
                "{field} {value:?}: expected invalid-request, got {}{}",
                shown(&result),
                if field == "name" {
                    ""
                } else {
                    " (a plugin that cannot know its vendor's catalogue offline can read it \
                     from [config], e.g. `regions`, `sizes`, `images`)"
                }
            )),
        }
    }
    if wrong.is_empty() {
        Ok(format!("refused {}", refused.join(", ")))
    } else {
        Err(wrong.join("; "))
    }
}

/// `contract.validate-offline`: no outbound request since `before` (the count before the
/// `validate` calls).
async fn validate_offline(kit: &Kit, before: u64) -> Verdict {
    let made = kit.plugin.outbound_requests() - before;
    if made == 0 {
        Ok("no outbound request in 5 validate calls".into())
    } else {
        Err(format!(
            "expected no outbound request, got {made} in 5 validate calls: validate must \
             check offline (the API calls it before accepting an order)"
        ))
    }
}
