//! Names and ids derived from the order: the VM, NIC and public IP names (ARM's `PUT` is
//! idempotent by name, so the same order always names the same three resources), and the
//! vendor id, the VM's ARM resource id.

use provider_sdk::{ProviderError, unique_name};

/// Azure's longest Linux VM name.
pub const MAX_VM_NAME: usize = 64;
/// The public IP's name is the VM's plus this.
pub const IP_SUFFIX: &str = "-ip";
/// The network interface's name is the VM's plus this.
pub const NIC_SUFFIX: &str = "-nic";
/// The resource types.
pub const VM_TYPE: &str = "Microsoft.Compute/virtualMachines";
pub const NIC_TYPE: &str = "Microsoft.Network/networkInterfaces";
pub const IP_TYPE: &str = "Microsoft.Network/publicIPAddresses";

/// The VM name of an order: its name (a hostname) plus a suffix from the idempotency key
/// (`provider_sdk::unique_name`), at most 64 characters: letters, digits, `-` and `.`,
/// starting and ending with a letter or digit, as ARM wants a VM name.
pub fn vm_name(name: &str, idempotency_key: &str) -> Result<String, ProviderError> {
    let derived = unique_name(name, idempotency_key, MAX_VM_NAME)?;
    if !is_resource_name(&derived, MAX_VM_NAME) {
        return Err(ProviderError::InvalidRequest(format!(
            "name '{}' does not make a valid Azure VM name",
            provider_sdk::ssh::prefix(name, 64)
        )));
    }
    Ok(derived)
}

/// A name ARM takes for these resources: 1..=`max` of letters, digits, `_`, `.`, `-`,
/// starting with a letter, digit or `_`, ending with a letter, digit or `_`.
pub fn is_resource_name(name: &str, max: usize) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    !name.is_empty()
        && name.len() <= max
        && name.chars().all(|c| word(c) || c == '.' || c == '-')
        && name.chars().next().is_some_and(word)
        && name.chars().last().is_some_and(word)
}

/// The public IP's name for the VM `vm`.
pub fn ip_name(vm: &str) -> String {
    format!("{vm}{IP_SUFFIX}")
}

/// The network interface's name for the VM `vm`.
pub fn nic_name(vm: &str) -> String {
    format!("{vm}{NIC_SUFFIX}")
}

/// Where a server lives: subscription, resource group, VM name. Its text is the VM's
/// resource id, `/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Compute/
/// virtualMachines/{name}`, the vendor id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorId {
    pub subscription: String,
    pub group: String,
    pub name: String,
}

impl VendorId {
    /// The resource id of the resource `name` of type `kind` in this server's group.
    pub fn resource(&self, kind: &str, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{kind}/{name}",
            self.subscription, self.group
        )
    }

    /// The VM's resource id.
    pub fn vm(&self) -> String {
        self.resource(VM_TYPE, &self.name)
    }

    /// The NIC's resource id.
    pub fn nic(&self) -> String {
        self.resource(NIC_TYPE, &nic_name(&self.name))
    }

    /// The public IP's resource id.
    pub fn ip(&self) -> String {
        self.resource(IP_TYPE, &ip_name(&self.name))
    }

    /// Reads a VM resource id (ARM's case-insensitive segment names).
    pub fn parse(text: &str) -> Result<Self, ProviderError> {
        let invalid = || {
            ProviderError::InvalidRequest(format!(
                "'{}' is not an Azure VM resource id (/subscriptions/<id>/resourceGroups/\
                 <group>/providers/Microsoft.Compute/virtualMachines/<name>)",
                provider_sdk::ssh::prefix(text, 120)
            ))
        };
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [
                "",
                subs,
                subscription,
                groups,
                group,
                providers,
                namespace,
                kind,
                name,
            ] if subs.eq_ignore_ascii_case("subscriptions")
                && groups.eq_ignore_ascii_case("resourceGroups")
                && providers.eq_ignore_ascii_case("providers")
                && namespace.eq_ignore_ascii_case("Microsoft.Compute")
                && kind.eq_ignore_ascii_case("virtualMachines")
                && !subscription.is_empty()
                && !group.is_empty()
                && is_resource_name(name, MAX_VM_NAME) =>
            {
                Ok(Self {
                    subscription: subscription.to_string(),
                    group: group.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(invalid()),
        }
    }
}

impl std::fmt::Display for VendorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.vm())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One order always names the same VM; another key another; the NIC and IP follow it,
    /// all valid ARM names within their limits.
    #[test]
    fn names_derive_from_the_order() {
        let a = vm_name("web", "order-1").unwrap();
        assert_eq!(a, vm_name("web", "order-1").unwrap());
        assert_ne!(a, vm_name("web", "order-2").unwrap());
        assert!(a.starts_with("web-"), "{a}");
        assert!(is_resource_name(&a, MAX_VM_NAME));
        assert_eq!(ip_name(&a), format!("{a}-ip"));
        assert_eq!(nic_name(&a), format!("{a}-nic"));
        let long = "a".repeat(63);
        let cut = vm_name(&long, "k").unwrap();
        assert!(cut.len() <= MAX_VM_NAME, "{cut}");
        assert!(is_resource_name(&nic_name(&cut), 80));
        let dotted = vm_name("web.example.com", "k").unwrap();
        assert!(is_resource_name(&dotted, MAX_VM_NAME), "{dotted}");
    }

    #[test]
    fn resource_names_follow_arm() {
        for good in ["a", "web-1", "web.1", "_x", "A_b-c.d"] {
            assert!(is_resource_name(good, 64), "{good}");
        }
        for bad in ["", "-a", "a-", "a.", "a b", "a/b", &"a".repeat(65)] {
            assert!(!is_resource_name(bad, 64), "{bad}");
        }
    }

    /// The vendor id is the VM's resource id and reads back; the NIC and IP ids follow.
    #[test]
    fn vendor_ids_round_trip() {
        let id = VendorId {
            subscription: "sub-1".into(),
            group: "rg".into(),
            name: "web-0123456789".into(),
        };
        let text = id.to_string();
        assert_eq!(
            text,
            "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-0123456789"
        );
        assert_eq!(VendorId::parse(&text).unwrap(), id);
        assert_eq!(
            VendorId::parse(&text.to_lowercase()).unwrap().name,
            "web-0123456789"
        );
        assert!(id.nic().ends_with("/networkInterfaces/web-0123456789-nic"));
        assert!(id.ip().ends_with("/publicIPAddresses/web-0123456789-ip"));
        for bad in [
            "web",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/x",
            "/subscriptions//resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/x",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/x/y",
        ] {
            assert!(VendorId::parse(bad).is_err(), "{bad}");
        }
    }
}
