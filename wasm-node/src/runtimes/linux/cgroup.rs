//! A Linux pod's CPU time and memory, read from its cgroup (runc puts it
//! at `skiff/<id>` under each hierarchy, see `cgroupsPath` in
//! [`super::containerd`]): cgroup v2's `cpu.stat` (`usage_usec`) and
//! `memory.current`, or v1's `cpuacct.usage` (nanoseconds) and
//! `memory.usage_in_bytes`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the node's cgroup hierarchies are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// One unified hierarchy.
    V2 { root: PathBuf },
    /// A hierarchy per controller.
    V1 { cpuacct: PathBuf, memory: PathBuf },
}

/// What a cgroup's files said; `None` where a file was missing or not
/// understood (the task has not started yet, or has gone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu: Option<Duration>,
    pub memory_bytes: Option<u64>,
}

impl Cgroups {
    /// The layout of this machine, decided as containerd's connection
    /// decides where to read OOM kills: a `memory` hierarchy of its own
    /// means cgroup v1 (runc then uses v1 for every controller).
    pub fn detect() -> Self {
        Self::under(Path::new("/sys/fs/cgroup"))
    }

    fn under(base: &Path) -> Self {
        if base.join("memory").is_dir() {
            let cpuacct = ["cpuacct", "cpu,cpuacct", "cpu"]
                .iter()
                .map(|name| base.join(name))
                .find(|dir| dir.join("cpuacct.usage").is_file())
                .unwrap_or_else(|| base.join("cpuacct"));
            Cgroups::V1 {
                cpuacct,
                memory: base.join("memory"),
            }
        } else {
            Cgroups::V2 {
                root: base.to_owned(),
            }
        }
    }

    /// The usage of the cgroup of container `id`.
    pub fn read(&self, id: &str) -> CgroupUsage {
        let read = |dir: &Path, file: &str| {
            std::fs::read_to_string(dir.join("skiff").join(id).join(file)).ok()
        };
        match self {
            Cgroups::V2 { root } => CgroupUsage {
                cpu: read(root, "cpu.stat").as_deref().and_then(cpu_stat_usage),
                memory_bytes: read(root, "memory.current").as_deref().and_then(number),
            },
            Cgroups::V1 { cpuacct, memory } => CgroupUsage {
                cpu: read(cpuacct, "cpuacct.usage")
                    .as_deref()
                    .and_then(number)
                    .map(Duration::from_nanos),
                memory_bytes: read(memory, "memory.usage_in_bytes")
                    .as_deref()
                    .and_then(number),
            },
        }
    }
}

/// `usage_usec` of a cgroup v2 `cpu.stat` (`key value` lines).
pub fn cpu_stat_usage(text: &str) -> Option<Duration> {
    text.lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(number)
        .map(Duration::from_micros)
}

/// A file holding one number (`memory.current`, `cpuacct.usage`).
pub fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat_and_single_numbers_are_parsed() {
        let stat = "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\nnr_periods 0\n";
        assert_eq!(cpu_stat_usage(stat), Some(Duration::from_millis(1500)));
        assert_eq!(cpu_stat_usage("user_usec 5\n"), None);
        assert_eq!(cpu_stat_usage("usage_usec many\n"), None);
        // A key that merely begins like it is another key.
        assert_eq!(cpu_stat_usage("usage_usecs 5\n"), None);
        assert_eq!(number("123456\n"), Some(123_456));
        assert_eq!(number("max\n"), None);
        assert_eq!(number(""), None);
    }

    fn write(path: PathBuf, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn both_layouts_are_read_from_the_containers_cgroup() {
        let v2 = tempfile::tempdir().unwrap();
        write(v2.path().join("skiff/web-1/cpu.stat"), "usage_usec 2000\n");
        write(v2.path().join("skiff/web-1/memory.current"), "4096\n");
        let cgroups = Cgroups::under(v2.path());
        assert!(matches!(cgroups, Cgroups::V2 { .. }));
        assert_eq!(
            cgroups.read("web-1"),
            CgroupUsage {
                cpu: Some(Duration::from_millis(2)),
                memory_bytes: Some(4096),
            }
        );
        assert_eq!(cgroups.read("gone"), CgroupUsage::default());

        let v1 = tempfile::tempdir().unwrap();
        write(v1.path().join("cpu,cpuacct/cpuacct.usage"), "0\n");
        write(
            v1.path().join("cpu,cpuacct/skiff/web-1/cpuacct.usage"),
            "3000000\n",
        );
        write(
            v1.path().join("memory/skiff/web-1/memory.usage_in_bytes"),
            "8192\n",
        );
        let cgroups = Cgroups::under(v1.path());
        assert_eq!(
            cgroups.read("web-1"),
            CgroupUsage {
                cpu: Some(Duration::from_millis(3)),
                memory_bytes: Some(8192),
            }
        );
    }
}
