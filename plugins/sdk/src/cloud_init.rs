//! SSH keys through cloud-init, for vendors without a key store (OpenStack's Nova takes one
//! key pair per server; cloud-init takes any number).
//!
//! [`with_ssh_keys`] returns the user data a server gets: the order's own user data
//! unchanged when the order has no keys; a `#cloud-config` with `ssh_authorized_keys` when it
//! has keys and no user data; and when it has both, a MIME multipart message (cloud-init's
//! own format for several parts, as `cloud-init devel make-mime` writes it) holding the
//! order's user data as its first part, unchanged, and the keys in a second `#cloud-config`
//! part whose `merge_how` appends to lists, so keys the order's own cloud-config lists stay.
//! User data cloud-init would not recognise (no `#cloud-config`, `#!`, `#include`... first
//! line, not MIME) cannot carry the keys: such an order is refused (`validate` calls this
//! too), rather than sent without its keys.

use crate::ssh::PublicKey;

/// cloud-init's user-data formats by first line, longest prefix first, with the MIME type
/// of a part in that format (cloud-init's `INCLUSION_TYPES_MAP`).
const FORMATS: &[(&str, &str)] = &[
    ("#cloud-config-archive", "text/cloud-config-archive"),
    ("#cloud-config-jsonp", "text/cloud-config-jsonp"),
    ("#cloud-config", "text/cloud-config"),
    ("#cloud-boothook", "text/cloud-boothook"),
    ("#include-once", "text/x-include-once-url"),
    ("#include", "text/x-include-url"),
    ("#upstart-job", "text/upstart-job"),
    ("#part-handler", "text/part-handler"),
    ("## template: jinja", "text/jinja2"),
    ("#!", "text/x-shellscript"),
];

/// The MIME type cloud-init gives `user_data`, or `None` for a MIME message (embedded as
/// it is) ; `Err` when cloud-init would not recognise it.
fn part_type(user_data: &str) -> Result<Option<&'static str>, String> {
    let start = user_data.trim_start_matches('\u{feff}');
    let head: String = start
        .chars()
        .take(64)
        .collect::<String>()
        .to_ascii_lowercase();
    if head.starts_with("content-type:") || head.starts_with("mime-version:") {
        return Ok(None);
    }
    FORMATS
        .iter()
        .find(|(prefix, _)| start.starts_with(prefix))
        .map(|(_, mime)| Some(*mime))
        .ok_or_else(|| {
            "user_data must be in a format cloud-init recognises (a first line of \
             #cloud-config, #!, #include, #cloud-boothook..., or a MIME multipart message) \
             for the ssh_keys to be added to it"
                .to_string()
        })
}

/// A `#cloud-config` document installing `keys` for the image's default user, appending
/// to (not replacing) lists of earlier parts.
fn keys_config(keys: &[PublicKey], merge: bool) -> String {
    let mut config = String::from("#cloud-config\n");
    if merge {
        config.push_str(
            "merge_how:\n  - name: list\n    settings: [append]\n  - name: dict\n    \
             settings: [no_replace, recurse_list]\n",
        );
    }
    config.push_str("ssh_authorized_keys:\n");
    for key in keys {
        // A JSON string is a YAML double-quoted scalar: no comment can break the document.
        let quoted = serde_json::Value::String(key.openssh.clone()).to_string();
        config.push_str(&format!("  - {quoted}\n"));
    }
    config
}

/// The user data carrying `keys` besides the order's own `user_data` (see the module doc).
pub fn with_ssh_keys(
    user_data: Option<&str>,
    keys: &[PublicKey],
) -> Result<Option<String>, String> {
    if keys.is_empty() {
        return Ok(user_data.map(str::to_string));
    }
    let Some(user_data) = user_data.filter(|data| !data.trim().is_empty()) else {
        return Ok(Some(keys_config(keys, false)));
    };
    let user_type = part_type(user_data)?;
    let mut boundary = "==provisioner-ssh-keys==".to_string();
    let mut n = 0;
    while user_data.contains(&boundary) {
        n += 1;
        boundary = format!("==provisioner-ssh-keys-{n}==");
    }
    let mut message = format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n\
         --{boundary}\n"
    );
    match user_type {
        Some(mime) => {
            message.push_str(&format!(
                "Content-Type: {mime}; charset=\"utf-8\"\nMIME-Version: 1.0\n\
                 Content-Disposition: attachment; filename=\"user-data\"\n\n"
            ));
            message.push_str(user_data);
        }
        // A MIME message is a part already: its headers, a blank line, its body.
        None => message.push_str(user_data),
    }
    if !message.ends_with('\n') {
        message.push('\n');
    }
    message.push_str(&format!(
        "--{boundary}\nContent-Type: text/cloud-config; charset=\"utf-8\"\nMIME-Version: 1.0\n\
         Content-Disposition: attachment; filename=\"provisioner-ssh-keys\"\n\n{}--{boundary}--\n",
        keys_config(keys, true)
    ));
    Ok(Some(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PublicKey {
        PublicKey::parse(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM1MQrOGZkyTYSLN/FGDhozOMWieTtIaVBkR5a83m5IW a@b",
        )
        .unwrap()
    }

    /// No keys: the user data as it was; keys alone: a cloud-config listing them.
    #[test]
    fn keys_alone_become_a_cloud_config() {
        assert_eq!(
            with_ssh_keys(Some("#!/bin/sh\n"), &[]).unwrap().as_deref(),
            Some("#!/bin/sh\n")
        );
        assert_eq!(with_ssh_keys(None, &[]).unwrap(), None);
        let config = with_ssh_keys(None, &[key()]).unwrap().unwrap();
        assert!(config.starts_with("#cloud-config\nssh_authorized_keys:\n  - \"ssh-ed25519 AAAA"));
    }

    /// Keys and user data: a multipart message with the user data unchanged and the keys
    /// in a cloud-config that appends; unrecognised user data is refused.
    #[test]
    fn keys_and_user_data_become_two_parts() {
        let script = "#!/bin/sh\necho hi\n";
        let message = with_ssh_keys(Some(script), &[key()]).unwrap().unwrap();
        assert!(message.starts_with("Content-Type: multipart/mixed; boundary="));
        assert!(message.contains("Content-Type: text/x-shellscript"));
        assert!(message.contains(script));
        assert!(message.contains("settings: [append]"));
        assert!(message.ends_with("--==provisioner-ssh-keys==--\n"));
        assert!(with_ssh_keys(Some("hello"), &[key()]).is_err());
    }
}
