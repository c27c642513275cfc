//! Who a Linux pod's process is and which capabilities it holds: decided
//! from the image's config and the pod's `securityContext`, before
//! anything is created in containerd. (What a namespace may ask for is
//! admission's business; the node applies what the pod says, and refuses
//! to run as root a pod that must not.)

use skiff_api::kinds::pod::SecurityContext;

/// Capabilities every Linux pod holds without asking: none. Pods share the
/// node's network and are told their port in `PORT`, so even
/// `NET_BIND_SERVICE` (Kubernetes' one default under its Restricted
/// level) would only let a pod take a privileged port of the node's.
pub const DEFAULT_CAPABILITIES: &[&str] = &[];

/// Linux's capabilities, in bit order (`CAP_CHOWN` is bit 0).
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities of the pod's process, as the OCI runtime spec names
/// them (`CAP_NET_ADMIN`): the default list and the pod's
/// `addCapabilities`, each once. A name may come with or without `CAP_`
/// and must be a known one in upper case; the error says which is not.
pub fn capabilities(context: Option<&SecurityContext>) -> Result<Vec<String>, String> {
    let added = context
        .map(|c| c.add_capabilities.as_slice())
        .unwrap_or(&[]);
    let mut granted: Vec<String> = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    for name in added {
        let bare = name.strip_prefix("CAP_").unwrap_or(name);
        if !CAPABILITIES.contains(&bare) {
            let upper = bare.to_ascii_uppercase();
            let upper = upper.strip_prefix("CAP_").unwrap_or(&upper);
            let hint = if CAPABILITIES.contains(&upper) {
                format!(" (capability names are upper case: {upper})")
            } else {
                String::new()
            };
            return Err(format!(
                "securityContext.addCapabilities: `{name}` is not a Linux capability{hint}"
            ));
        }
        let full = format!("CAP_{bare}");
        if !granted.contains(&full) {
            granted.push(full);
        }
    }
    Ok(granted)
}

/// Why a pod does not run as the image says.
#[derive(Debug, PartialEq, Eq)]
pub enum UserError {
    /// The image names its user, and the name is not `root` (names would
    /// need the image's `/etc/passwd`).
    NotNumeric(String),
    /// `runAsNonRoot`, and the process would run as uid 0.
    Root(String),
}

/// The uid and gid of the pod's process. `runAsUser` and `runAsGroup`
/// replace the image's user and group; the image's `uid[:gid]` (or
/// `root`) gives the rest; a group unsaid is the uid's number, as for an
/// image's bare `uid`. With `runAsNonRoot`, uid 0 is refused: an image
/// that says `0`, `root` or nothing, unless `runAsUser` is another uid.
pub fn user(
    image: &str,
    image_user: &str,
    context: Option<&SecurityContext>,
) -> Result<(u32, u32), UserError> {
    let id = |text: &str| {
        match text {
        "root" => Ok(0),
        _ => text.parse::<u32>().map_err(|_| {
            UserError::NotNumeric(format!(
                "{image}: the image's user `{image_user}` is not numeric (uid[:gid]); names other than root are not supported"
            ))
        }),
    }
    };
    let run_as_user = context.and_then(|c| c.run_as_user);
    let run_as_group = context.and_then(|c| c.run_as_group);
    // An image user the pod replaces entirely is not read, so its name
    // does not matter.
    let (image_uid, image_gid) = match image_user.split_once(':') {
        _ if image_user.is_empty() => (Some(0), None),
        Some((u, g)) => (
            run_as_user.is_none().then(|| id(u)).transpose()?,
            run_as_group.is_none().then(|| id(g)).transpose()?,
        ),
        None => (
            run_as_user.is_none().then(|| id(image_user)).transpose()?,
            None,
        ),
    };
    let uid = run_as_user.or(image_uid).unwrap_or(0);
    let gid = run_as_group.or(image_gid).unwrap_or(uid);
    if uid == 0 && context.and_then(|c| c.run_as_non_root) == Some(true) {
        return Err(UserError::Root(match (run_as_user, image_user) {
            (Some(_), _) => {
                "securityContext.runAsUser is 0 and the pod must not run as root (runAsNonRoot)"
                    .to_owned()
            }
            (None, "") => format!(
                "image {image} runs as root (its user is unset) and the pod must not run as root: set securityContext.runAsUser"
            ),
            (None, user) => format!(
                "image {image} runs as root (its user is `{user}`) and the pod must not run as root: set securityContext.runAsUser"
            ),
        }));
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(
        run_as_user: Option<u32>,
        run_as_group: Option<u32>,
        non_root: bool,
    ) -> SecurityContext {
        SecurityContext {
            run_as_user,
            run_as_group,
            run_as_non_root: non_root.then_some(true),
            add_capabilities: Vec::new(),
        }
    }

    #[test]
    fn users_come_from_the_pod_then_the_image() {
        let image = "127.0.0.1:5000/app:v1";
        let cases: &[(&str, Option<SecurityContext>, (u32, u32))] = &[
            ("", None, (0, 0)),
            ("root", None, (0, 0)),
            ("root:root", None, (0, 0)),
            ("1000", None, (1000, 1000)),
            ("1000:50", None, (1000, 50)),
            ("", Some(context(Some(1000), None, true)), (1000, 1000)),
            (
                "",
                Some(context(Some(1000), Some(3000), true)),
                (1000, 3000),
            ),
            ("7:8", Some(context(Some(1000), None, false)), (1000, 8)),
            ("7:8", Some(context(None, Some(9), false)), (7, 9)),
            ("1000", Some(context(None, None, true)), (1000, 1000)),
            // Names the pod replaces are never read.
            (
                "nobody",
                Some(context(Some(65534), None, false)),
                (65534, 65534),
            ),
            (
                "nobody:nogroup",
                Some(context(Some(1), Some(2), false)),
                (1, 2),
            ),
        ];
        for (image_user, context, expected) in cases {
            assert_eq!(
                user(image, image_user, context.as_ref()),
                Ok(*expected),
                "{image_user:?} {context:?}"
            );
        }
    }

    #[test]
    fn run_as_non_root_refuses_uid_0_and_says_why() {
        let image = "127.0.0.1:5000/app:v1";
        let non_root = context(None, None, true);
        let refused = |image_user: &str, context: &SecurityContext| match user(
            image,
            image_user,
            Some(context),
        ) {
            Err(UserError::Root(message)) => message,
            other => panic!("{image_user:?}: {other:?}"),
        };
        assert_eq!(
            refused("", &non_root),
            "image 127.0.0.1:5000/app:v1 runs as root (its user is unset) and the pod must not run as root: set securityContext.runAsUser"
        );
        assert_eq!(
            refused("root", &non_root),
            "image 127.0.0.1:5000/app:v1 runs as root (its user is `root`) and the pod must not run as root: set securityContext.runAsUser"
        );
        assert!(refused("0:1000", &non_root).contains("(its user is `0:1000`)"));
        assert_eq!(
            refused("1000", &context(Some(0), None, true)),
            "securityContext.runAsUser is 0 and the pod must not run as root (runAsNonRoot)"
        );
        // Without runAsNonRoot, root is root.
        assert_eq!(
            user(image, "", Some(&context(None, None, false))),
            Ok((0, 0))
        );
    }

    #[test]
    fn image_users_by_other_names_are_refused() {
        let error = user("app:v1", "nginx", None).unwrap_err();
        assert_eq!(
            error,
            UserError::NotNumeric(
                "app:v1: the image's user `nginx` is not numeric (uid[:gid]); names other than root are not supported".into()
            )
        );
        assert!(matches!(
            user("app:v1", "1000:staff", None),
            Err(UserError::NotNumeric(_))
        ));
    }

    #[test]
    fn capabilities_are_the_defaults_and_known_additions() {
        assert_eq!(capabilities(None), Ok(Vec::<String>::new()));
        let mut asking = context(None, None, false);
        asking.add_capabilities = vec![
            "NET_ADMIN".into(),
            "CAP_SYS_TIME".into(),
            "NET_ADMIN".into(),
        ];
        assert_eq!(
            capabilities(Some(&asking)),
            Ok(vec!["CAP_NET_ADMIN".to_owned(), "CAP_SYS_TIME".to_owned()])
        );
        asking.add_capabilities = vec!["net_admin".into()];
        assert_eq!(
            capabilities(Some(&asking)),
            Err("securityContext.addCapabilities: `net_admin` is not a Linux capability (capability names are upper case: NET_ADMIN)".into())
        );
        asking.add_capabilities = vec!["CAP_TIME_TRAVEL".into()];
        assert_eq!(
            capabilities(Some(&asking)),
            Err(
                "securityContext.addCapabilities: `CAP_TIME_TRAVEL` is not a Linux capability"
                    .into()
            )
        );
        assert_eq!(CAPABILITIES.len(), 41, "CAP_LAST_CAP is 40");
    }
}
