//! The seccomp profile of every Linux pod: an allow-list of the system
//! calls ordinary programs make, and `EPERM` for every other.
//!
//! It is our own, written from the Linux syscall tables of x86_64 and
//! aarch64, and equivalent in effect to containerd's and Docker's default
//! profile, with one difference: theirs widens with capabilities (with
//! `CAP_SYS_ADMIN`, Docker's allows `mount`, `unshare`, `setns`, `clone`
//! with namespace flags ...), ours is the same for every pod. A namespace
//! that may add capabilities grants what they do within this set of
//! syscalls, never the syscalls that reach past the pod's namespaces into
//! the node.
//!
//! Allowed: file and descriptor I/O, polling, memory management, processes
//! and threads (`clone` only without namespace flags), credentials within
//! what the capabilities permit, signals, reading clocks and timers,
//! sockets (every family but `AF_VSOCK`, which reaches the hypervisor),
//! System V and POSIX IPC (the pod has its own IPC namespace), self-imposed
//! restrictions (`seccomp`, `landlock_*`, `prctl`), `personality` only for
//! the usual Linux personas, and `ptrace` of the pod's own processes on
//! kernels from 4.8 on (before 4.8, ptrace could bypass seccomp).
//!
//! Denied, with `EPERM`: loading kernel code or a new kernel (`kexec_*`,
//! `init_module`, `finit_module`, `delete_module`, `bpf`), mounts and the
//! new mount API (`mount`, `umount2`, `pivot_root`, `fsopen`, `open_tree`
//! ...), new or other namespaces (`unshare`, `setns`), the node's state
//! (`reboot`, `swapon`/`swapoff`, `acct`, `quotactl`, `sethostname`,
//! `syslog`), setting clocks (`settimeofday`, `clock_settime`, `adjtimex`,
//! `clock_adjtime`), the kernel keyring (`keyctl`, `add_key`,
//! `request_key`), reaching into other processes (`process_vm_readv`/
//! `writev`, `kcmp`, `pidfd_getfd`, `process_madvise`), file handles that
//! bypass path checks (`open_by_handle_at`, `name_to_handle_at`), port I/O
//! (`iopl`, `ioperm`), and interfaces with a long record of kernel exploits
//! that ordinary programs do without (`userfaultfd`, `perf_event_open`,
//! `io_uring_*`, `modify_ldt`, NUMA policy calls). Everything not listed is
//! denied too, including syscalls newer than the kernel headers runc was
//! built with; runc answers those with `ENOSYS`, so libc falls back to
//! their older forms.
//!
//! `clone3` is answered with `ENOSYS`, not `EPERM`: its flags live in
//! memory, where seccomp cannot see them, and libc falls back to `clone`
//! (whose flags it can check) only on `ENOSYS`.
//!
//! The filter covers the machine's own architecture and the 32-bit ones
//! its kernel runs binaries of (x86 and x32 on x86_64, arm on aarch64);
//! names that an architecture lacks are skipped for it.

use std::sync::LazyLock;

use serde_json::{Value, json};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`. (`CLONE_NEWTIME` shares
/// its bit with clone's exit signal and can only be asked for through
/// `unshare` and `clone3`, both denied.)
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// The address family of virtio sockets, to the hypervisor.
const AF_VSOCK: u64 = 40;

/// Personas allowed: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `UNAME26 | PER_LINUX32`, and `0xffffffff`, which only asks for the
/// current one. The others change how the kernel treats the process (such
/// as `ADDR_NO_RANDOMIZE`, which turns off address space randomisation).
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

// The lists below are kept dense, out of rustfmt's one name per line, to
// read as the tables they are.

/// Descriptors, files and directories.
#[rustfmt::skip]
const FILES: &[&str] = &[
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range", "lseek",
    "_llseek", "dup", "dup2", "dup3", "pipe", "pipe2", "fcntl", "fcntl64", "ioctl", "flock",
    "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "truncate", "truncate64",
    "ftruncate", "ftruncate64", "fallocate", "fadvise64", "fadvise64_64", "readahead",
    "sendfile", "sendfile64", "splice", "tee", "vmsplice", "copy_file_range", "stat", "stat64",
    "fstat", "fstat64", "lstat", "lstat64", "newfstatat", "fstatat64", "statx", "statfs",
    "statfs64", "fstatfs", "fstatfs64", "access", "faccessat", "faccessat2", "readlink",
    "readlinkat", "getdents", "getdents64", "getcwd", "chdir", "fchdir", "chroot", "mkdir",
    "mkdirat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat", "symlink",
    "symlinkat", "unlink", "unlinkat", "mknod", "mknodat", "chmod", "fchmod", "fchmodat",
    "fchmodat2", "chown", "chown32", "fchown", "fchown32", "fchownat", "lchown", "lchown32",
    "umask", "utime", "utimes", "utimensat", "utimensat_time64", "futimesat", "getxattr",
    "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr", "listxattr", "llistxattr",
    "flistxattr", "removexattr", "lremovexattr", "fremovexattr", "inotify_init",
    "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "memfd_create", "cachestat",
];

/// Waiting on descriptors, and asynchronous I/O (the old `io_*` kind;
/// `io_uring` is denied).
#[rustfmt::skip]
const EVENTS: &[&str] = &[
    "select", "_newselect", "pselect6", "pselect6_time64", "poll", "ppoll", "ppoll_time64",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    "eventfd", "eventfd2", "signalfd", "signalfd4", "timerfd_create", "timerfd_settime",
    "timerfd_settime64", "timerfd_gettime", "timerfd_gettime64", "io_setup", "io_destroy",
    "io_submit", "io_cancel", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
];

/// The process's own memory.
#[rustfmt::skip]
const MEMORY: &[&str] = &[
    "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "pkey_mprotect", "pkey_alloc",
    "pkey_free", "madvise", "mlock", "mlock2", "munlock", "mlockall", "munlockall", "mincore",
    "msync", "remap_file_pages", "membarrier", "map_shadow_stack", "mseal",
];

/// Processes and threads (`clone` has a rule of its own), scheduling, and
/// limits the process puts on itself.
#[rustfmt::skip]
const PROCESSES: &[&str] = &[
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "waitpid",
    "getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid",
    "set_tid_address", "set_robust_list", "get_robust_list", "futex", "futex_time64",
    "futex_waitv", "futex_wake", "futex_wait", "futex_requeue", "rseq", "sched_yield",
    "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_setparam",
    "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_getattr", "sched_setattr", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
    "prctl", "capget", "capset", "uname", "sysinfo", "getrusage", "getrlimit", "setrlimit",
    "prlimit64", "ugetrlimit", "times", "getcpu", "getrandom", "pidfd_open",
    "pidfd_send_signal", "seccomp", "landlock_create_ruleset", "landlock_add_rule",
    "landlock_restrict_self",
];

/// Who the process is; changing it is up to the capabilities.
#[rustfmt::skip]
const CREDENTIALS: &[&str] = &[
    "getuid", "getuid32", "geteuid", "geteuid32", "getgid", "getgid32", "getegid", "getegid32",
    "getresuid", "getresuid32", "getresgid", "getresgid32", "getgroups", "getgroups32",
    "setuid", "setuid32", "setgid", "setgid32", "setreuid", "setreuid32", "setregid",
    "setregid32", "setresuid", "setresuid32", "setresgid", "setresgid32", "setfsuid",
    "setfsuid32", "setfsgid", "setfsgid32", "setgroups", "setgroups32",
];

#[rustfmt::skip]
const SIGNALS: &[&str] = &[
    "kill", "tkill", "tgkill", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn",
    "rt_sigpending", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaction", "sigprocmask", "sigreturn",
    "sigpending", "sigsuspend", "sigaltstack", "signal", "pause", "alarm", "restart_syscall",
];

/// Reading clocks, sleeping and timers; never setting a clock.
#[rustfmt::skip]
const TIME: &[&str] = &[
    "time", "gettimeofday", "clock_gettime", "clock_gettime64", "clock_getres",
    "clock_getres_time64", "clock_nanosleep", "clock_nanosleep_time64", "nanosleep",
    "getitimer", "setitimer", "timer_create", "timer_settime", "timer_settime64",
    "timer_gettime", "timer_gettime64", "timer_getoverrun", "timer_delete",
];

/// Sockets once made (`socket` has a rule of its own; `socketcall` is the
/// 32-bit x86 multiplexer of them all).
#[rustfmt::skip]
const SOCKETS: &[&str] = &[
    "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname",
    "getpeername", "getsockopt", "setsockopt", "sendto", "recvfrom", "send", "recv", "sendmsg",
    "recvmsg", "sendmmsg", "recvmmsg", "recvmmsg_time64", "shutdown", "socketcall",
];

/// System V and POSIX IPC, within the pod's IPC namespace (`ipc` is the
/// 32-bit x86 multiplexer).
#[rustfmt::skip]
const IPC: &[&str] = &[
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semtimedop_time64",
    "semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "ipc", "mq_open", "mq_unlink",
    "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_notify", "mq_getsetattr",
];

/// Calls only one architecture has: thread-local storage and, on arm,
/// cache maintenance and its own argument orders.
#[rustfmt::skip]
const ARCHITECTURE: &[&str] = &[
    "arch_prctl", "set_thread_area", "get_thread_area", "set_tls", "cacheflush", "breakpoint",
    "arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2",
];

/// Denied on purpose (everything unlisted is denied too); named here so
/// the unit tests keep them out of the allow-list.
#[rustfmt::skip]
pub const DENIED: &[&str] = &[
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "bpf", "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig",
    "fsmount", "fspick", "move_mount", "open_tree", "open_tree_attr", "mount_setattr",
    "unshare", "setns", "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    "sethostname", "setdomainname", "syslog", "settimeofday", "stime", "clock_settime",
    "clock_settime64", "adjtimex", "clock_adjtime", "clock_adjtime64", "keyctl", "add_key",
    "request_key", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "process_madvise", "open_by_handle_at", "name_to_handle_at", "iopl", "ioperm",
    "userfaultfd", "perf_event_open", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "modify_ldt", "vm86", "vm86old", "get_mempolicy", "set_mempolicy",
    "set_mempolicy_home_node", "mbind", "migrate_pages", "move_pages", "lookup_dcookie",
    "fanotify_init", "fanotify_mark", "vhangup", "uselib", "ustat", "sysfs", "_sysctl",
    "nfsservctl",
];

/// The seccomp architectures of a machine (Rust's name for it): its own
/// first, then the 32-bit ones its kernel also runs. Empty for others:
/// runc then filters the native architecture only.
pub fn architectures(arch: &str) -> &'static [&'static str] {
    match arch {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &[],
    }
}

/// Every list of allowed syscalls.
const ALLOWED: [&[&str]; 10] = [
    FILES,
    EVENTS,
    MEMORY,
    PROCESSES,
    CREDENTIALS,
    SIGNALS,
    TIME,
    SOCKETS,
    IPC,
    ARCHITECTURE,
];

/// The profile as the OCI runtime spec's `linux.seccomp`, for a machine
/// of architecture `arch` (Rust's name) running kernel `kernel` (major,
/// minor).
pub fn profile(arch: &str, kernel: (u32, u32)) -> Value {
    let mut allowed: Vec<&str> = ALLOWED.concat();
    if kernel >= (4, 8) {
        allowed.push("ptrace");
    }
    let allow_if = |name: &str, args: Value| json!({"names": [name], "action": "SCMP_ACT_ALLOW", "args": args});
    let mut syscalls = vec![
        json!({"names": allowed, "action": "SCMP_ACT_ALLOW"}),
        allow_if(
            "clone",
            json!([{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]),
        ),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}),
        allow_if(
            "socket",
            json!([{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]),
        ),
    ];
    // Conditions of one rule must all hold; each persona is a rule.
    for persona in PERSONAS {
        syscalls.push(allow_if(
            "personality",
            json!([{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]),
        ));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": architectures(arch),
        "syscalls": syscalls,
    })
}

/// The profile for this machine, made once.
pub fn for_this_node() -> &'static Value {
    static PROFILE: LazyLock<Value> = LazyLock::new(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        profile(std::env::consts::ARCH, kernel_version(&release))
    });
    &PROFILE
}

/// (major, minor) of a kernel release such as `6.1.0-18-amd64`; (0, 0)
/// when unreadable, which only keeps `ptrace` out.
fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release.trim().split(['.', '-']);
    let mut number = || parts.next().and_then(|p| p.parse().ok());
    match (number(), number()) {
        (Some(major), Some(minor)) => (major, minor),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every name some rule of the profile allows, with or without
    /// conditions.
    fn allowed(profile: &Value) -> BTreeSet<String> {
        profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|rule| rule["names"].as_array().unwrap().clone())
            .map(|name| name.as_str().unwrap().to_owned())
            .collect()
    }

    fn rules_for<'a>(profile: &'a Value, name: &str) -> Vec<&'a Value> {
        profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rule| rule["names"].as_array().unwrap().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn the_profile_is_an_allow_list_with_eperm_for_the_rest() {
        let profile = profile("x86_64", (6, 1));
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["defaultErrnoRet"], EPERM);
        let allowed = allowed(&profile);
        for name in [
            "read",
            "openat",
            "execve",
            "futex",
            "socket",
            "clone",
            "epoll_wait",
        ] {
            assert!(allowed.contains(name), "{name} is not allowed");
        }
        let denied: Vec<&&str> = DENIED.iter().filter(|d| allowed.contains(**d)).collect();
        assert!(denied.is_empty(), "denied syscalls allowed: {denied:?}");
        assert!(!allowed.contains("clone3"));
    }

    #[test]
    fn no_syscall_is_listed_twice() {
        let lists: Vec<&[&str]> = ALLOWED.iter().copied().chain([DENIED]).collect();
        let mut seen = BTreeSet::new();
        for name in lists.concat() {
            assert!(seen.insert(name), "{name} is listed twice");
        }
        for special in ["clone", "clone3", "socket", "personality", "ptrace"] {
            assert!(!seen.contains(special), "{special} has a rule of its own");
        }
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags_and_clone3_says_enosys() {
        let profile = profile("aarch64", (6, 1));
        let clone = rules_for(&profile, "clone");
        assert_eq!(clone.len(), 1, "{clone:?}");
        assert_eq!(
            clone[0]["args"],
            json!([{"index": 0, "value": 0x7E02_0000_u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
        );
        let clone3 = rules_for(&profile, "clone3");
        assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3[0]["errnoRet"], ENOSYS);
        let socket = rules_for(&profile, "socket");
        assert_eq!(socket[0]["args"][0]["op"], "SCMP_CMP_NE");
        assert_eq!(socket[0]["args"][0]["value"], AF_VSOCK);
    }

    #[test]
    fn personality_is_allowed_for_the_usual_personas_only() {
        let profile = profile("x86_64", (6, 1));
        let values: Vec<u64> = rules_for(&profile, "personality")
            .iter()
            .map(|rule| {
                assert_eq!(rule["args"].as_array().unwrap().len(), 1);
                assert_eq!(rule["args"][0]["op"], "SCMP_CMP_EQ");
                rule["args"][0]["value"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(values, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    }

    #[test]
    fn ptrace_is_allowed_from_kernel_4_8() {
        assert!(!allowed(&profile("x86_64", (4, 4))).contains("ptrace"));
        assert!(allowed(&profile("x86_64", (4, 8))).contains("ptrace"));
        assert!(allowed(&profile("x86_64", (6, 18))).contains("ptrace"));
    }

    #[test]
    fn architectures_cover_the_machine_and_its_32_bit_kin() {
        assert_eq!(
            profile("x86_64", (6, 1))["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        assert_eq!(
            profile("aarch64", (6, 1))["architectures"],
            json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        );
        assert_eq!(profile("riscv64", (6, 1))["architectures"], json!([]));
    }

    #[test]
    fn kernel_versions_are_read_from_the_release() {
        assert_eq!(kernel_version("6.1.0-18-amd64\n"), (6, 1));
        assert_eq!(kernel_version("4.8.0"), (4, 8));
        assert_eq!(kernel_version("6.18.44-fc-v1045"), (6, 18));
        assert_eq!(kernel_version(""), (0, 0));
    }
}
