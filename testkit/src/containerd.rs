//! A containerd of a test's own (root, state and socket in a temporary
//! directory; containerd needs root), and ordinary Linux images built from
//! Debian's busybox-static with `umoci` and pushed to a registry with
//! `skopeo`.

use std::path::{Path, PathBuf};

use sha2::Digest as _;
use std::process::{Child, Command, Stdio};

use super::{START_TIMEOUT, run_checked, unique, wait_until};

pub struct Containerd {
    child: Child,
    /// Its gRPC socket, for `wasm-node join --containerd-socket`.
    pub socket: PathBuf,
    dir: PathBuf,
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = std::env::temp_dir().join(unique("skiff-containerd"));
        std::fs::create_dir_all(&dir).expect("containerd directory");
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        // Only what the node uses: no CRI plugin, no CNI.
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 [grpc]\n  address = \"{socket}\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n  disable = true\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                socket = socket.display(),
            ),
        )
        .expect("containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd starts (apt-get install containerd runc)");
        let up = wait_until(START_TIMEOUT, || {
            socket.exists() || child.try_wait().ok().flatten().is_some()
        });
        assert!(
            up && child.try_wait().ok().flatten().is_none(),
            "containerd did not start:\n{}",
            std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
        );
        Containerd { child, socket, dir }
    }

    /// `ctr` against this containerd, in containerd namespace `namespace`;
    /// its output.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> String {
        let output = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", namespace])
            .args(args)
            .output()
            .expect("ctr runs");
        assert!(
            output.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Shims outlive containerd by design; this containerd's are the
        // ones started with its socket.
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(self.socket.display().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshots may still be mounted by a killed task.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let root = self.dir.display().to_string();
            for target in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if target.starts_with(&root) {
                    let _ = Command::new("umount").arg("-l").arg(target).status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds an image of Debian's static busybox (its applets linked in
/// `/bin`) whose command is `cmd`, pushes it to `reference` in a plain-HTTP
/// registry, and returns its manifest digest.
pub fn push_busybox_image(reference: &str, cmd: &[&str]) -> String {
    BusyboxLayout::new(cmd).push("latest", reference, false, None)
}

/// As [`push_busybox_image`], with the image's config naming `user` (such
/// as `1000` or `root`) as the user it runs as.
pub fn push_busybox_image_running_as(reference: &str, cmd: &[&str], user: &str) -> String {
    BusyboxLayout::running_as(cmd, Some(user)).push("latest", reference, false, None)
}

/// As [`push_busybox_image`], to a registry that takes `user` with
/// `password`.
pub fn push_busybox_image_as(reference: &str, cmd: &[&str], user: &str, password: &str) -> String {
    BusyboxLayout::new(cmd).push("latest", reference, false, Some((user, password)))
}

/// Pushes a multi-platform image index to `reference`: busybox running
/// `cmd` for this machine's platform (`linux/amd64` here), and running
/// `decoy_cmd` under another architecture's name. Returns the index's
/// digest.
pub fn push_busybox_index(reference: &str, cmd: &[&str], decoy_cmd: &[&str]) -> String {
    let layout = BusyboxLayout::new(cmd);
    layout.configure("decoy", decoy_cmd);
    let native = host_architecture();
    let other = if native == "arm64" { "amd64" } else { "arm64" };
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.dir.join("layout/index.json")).expect("index.json"),
    )
    .expect("index.json is JSON");
    let entry = |tag: &str, architecture: &str| {
        let mut entry = index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("tag {tag} in the layout"))
            .clone();
        entry["annotations"].take();
        entry["platform"] = serde_json::json!({"os": "linux", "architecture": architecture});
        entry
    };
    let image_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry("decoy", other), entry("latest", native)],
    });
    let bytes = serde_json::to_vec(&image_index).expect("index");
    let hex = format!("{:x}", sha2::Sha256::digest(&bytes));
    std::fs::write(layout.dir.join("layout/blobs/sha256").join(&hex), &bytes).expect("index blob");
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    });
    std::fs::write(
        layout.dir.join("layout/index.json"),
        serde_json::to_vec(&top).expect("index.json"),
    )
    .expect("index.json");
    layout.push("multi", reference, true, None)
}

/// The OCI name of this machine's architecture.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An OCI layout holding busybox images, in a temporary directory.
struct BusyboxLayout {
    dir: PathBuf,
}

impl BusyboxLayout {
    /// The layout with busybox tagged `latest`, running `cmd`.
    fn new(cmd: &[&str]) -> Self {
        Self::running_as(cmd, None)
    }

    /// As [`BusyboxLayout::new`], with the config's user, if given.
    fn running_as(cmd: &[&str], user: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(unique("skiff-image"));
        std::fs::create_dir_all(&dir).expect("image directory");
        let layout = Self { dir };
        let bundle = layout.dir.join("bundle");
        let image = layout.image("latest");
        umoci(&["init", "--layout", path_str(&layout.dir.join("layout"))]);
        umoci(&["new", "--image", &image]);
        umoci(&["unpack", "--image", &image, path_str(&bundle)]);
        let bin = bundle.join("rootfs/bin");
        std::fs::create_dir_all(&bin).expect("rootfs/bin");
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .expect("/bin/busybox (apt-get install busybox-static)");
        // Each applet a link to `busybox` beside it (busybox --install would
        // link to the path it ran from on the host).
        let applets = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&applets.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
            }
        }
        umoci(&["repack", "--image", &image, path_str(&bundle)]);
        // After the repack, which would put back the config it unpacked.
        layout.configure_as("latest", cmd, user);
        layout
    }

    fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.join("layout").display())
    }

    /// Sets the command of `latest` and tags the result `tag`.
    fn configure(&self, tag: &str, cmd: &[&str]) {
        self.configure_as(tag, cmd, None);
    }

    /// As [`BusyboxLayout::configure`], with the config's user, if given.
    fn configure_as(&self, tag: &str, cmd: &[&str], user: Option<&str>) {
        let image = self.image("latest");
        let mut config = vec!["config", "--image", &image, "--tag", tag];
        config.extend(["--config.env", "PATH=/bin"]);
        if let Some(user) = user {
            config.extend(["--config.user", user]);
        }
        for arg in cmd {
            config.extend(["--config.cmd", arg]);
        }
        umoci(&config);
    }

    /// Pushes `tag` (with every manifest of an index, if `all`) to
    /// `reference`, as `user` if given; its digest.
    fn push(&self, tag: &str, reference: &str, all: bool, user: Option<(&str, &str)>) -> String {
        let source = format!("oci:{}", self.image(tag));
        let destination = format!("docker://{reference}");
        let creds = user.map(|(user, password)| format!("{user}:{password}"));
        let mut copy = vec!["copy", "--quiet", "--dest-tls-verify=false"];
        if all {
            copy.push("--all");
        }
        if let Some(creds) = &creds {
            copy.extend(["--dest-creds", creds]);
        }
        copy.extend([source.as_str(), destination.as_str()]);
        run_checked(Command::new("skopeo").args(&copy), "skopeo copy");
        let mut inspect = vec!["inspect", "--raw", "--tls-verify=false"];
        if let Some(creds) = &creds {
            inspect.extend(["--creds", creds]);
        }
        inspect.push(&destination);
        let output = Command::new("skopeo")
            .args(&inspect)
            .output()
            .expect("skopeo inspect runs");
        assert!(output.status.success(), "skopeo inspect {reference}");
        format!("sha256:{:x}", sha2::Sha256::digest(&output.stdout))
    }
}

impl Drop for BusyboxLayout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn umoci(args: &[&str]) {
    run_checked(Command::new("umoci").args(args), &format!("umoci {args:?}"));
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("paths are utf-8")
}
