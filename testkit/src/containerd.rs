//! A containerd of a test's own (root, state and socket in a temporary
//! directory; containerd needs root), and ordinary Linux images built from
//! Debian's busybox-static with `umoci` and pushed to a registry with
//! `skopeo`.

use std::path::{Path, PathBuf};
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
    let dir = std::env::temp_dir().join(unique("skiff-image"));
    std::fs::create_dir_all(&dir).expect("image directory");
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let image = format!("{}:latest", layout.display());
    let umoci = |args: &[&str]| {
        run_checked(Command::new("umoci").args(args), &format!("umoci {args:?}"));
    };
    umoci(&["init", "--layout", path_str(&layout)]);
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
    let mut config = vec!["config", "--image", &image, "--config.env", "PATH=/bin"];
    for arg in cmd {
        config.extend(["--config.cmd", arg]);
    }
    umoci(&config);
    run_checked(
        Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{image}"),
            &format!("docker://{reference}"),
        ]),
        "skopeo copy",
    );
    let output = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{reference}"),
        ])
        .output()
        .expect("skopeo inspect runs");
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("paths are utf-8")
}
