"""The seccomp filters every sandbox runs under: an allow-list, and a guard behind it.

Two filters, built once with libseccomp (pyseccomp) as classic BPF and both handed to
bubblewrap (``--add-seccomp-fd``); the kernel applies both and the stricter answer wins.

* **The allow-list** (``ALLOWED_SYSCALLS``): default deny. Started from what Docker's default
  profile allows an unprivileged container, less what the guard denies, and checked against
  our workloads (Python, ipykernel, Node, esbuild, bash, pip, npm; their test suites run under
  it). A system call a future kernel adds is refused here until someone allows it. As in
  Docker's profile, ``clone`` may not make namespaces, ``clone3`` answers ENOSYS (so the C
  library falls back to ``clone``, whose flags a filter can see), ``socket`` may not open
  AF_VSOCK and ``personality`` takes only the harmless values.
* **The guard** (``DENIED_SYSCALLS`` and the terminal ioctls): default allow, the dangerous
  calls named. It says why each is out, and keeps ``ioctl(TIOCSTI)`` out, which an allow-list
  cannot say (libseccomp has no "allow unless the argument is X" in one filter).

Refused calls fail with EPERM rather than killing the process, so a program that probes for a
feature sees a clear error. Only the native architecture is allowed: a 32-bit (int 0x80) or x32
system call kills the process, so neither list can be bypassed through another ABI's numbers.
"""

from __future__ import annotations

import errno
import os
import tempfile
from functools import cache
from typing import Any

# Why each is denied: escaping or inspecting the sandbox (ptrace, process_vm_*, kcmp, setns,
# unshare, mount family, pivot_root, chroot, open_by_handle_at), attacking the kernel's larger
# surfaces (bpf, perf_event_open, userfaultfd, io_uring, keyrings, module loading, kexec), and
# changing global machine state (reboot, swap, clock, hostname, acct, quotactl, syslog).
DENIED_SYSCALLS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "mount",
    "umount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "open_by_handle_at",
    "name_to_handle_at",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "uselib",
    "lookup_dcookie",
    "nfsservctl",
    "vhangup",
    "fanotify_init",
)

# Docker's default profile (moby profiles/seccomp/default.json), its unconditional allow-list,
# less what DENIED_SYSCALLS names (io_uring, name_to_handle_at and the clock adjusters) and
# the 32-bit names absent on 64-bit architectures (skipped where unknown). Conditional rules
# follow in _allow_list_filter.
ALLOWED_SYSCALLS = (
    "accept", "accept4", "access", "alarm", "bind", "brk", "capget", "capset", "chdir",
    "chmod", "chown", "chown32", "clock_getres", "clock_getres_time64", "clock_gettime",
    "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range",
    "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create",
    "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait",
    "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group",
    "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark",
    "fchdir", "fchmod", "fchmodat", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64",
    "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr",
    "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd",
    "getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
    "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp",
    "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname",
    "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32",
    "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
    "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown",
    "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "_llseek",
    "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
    "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "nanosleep", "newfstatat", "_newselect", "open", "openat",
    "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64",
    "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64",
    "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages",
    "removexattr", "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq",
    "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
    "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg",
    "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid",
    "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority", "setregid",
    "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid",
    "setreuid32", "setrlimit", "set_robust_list", "setsid", "setsockopt", "set_thread_area",
    "set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl", "shmdt", "shmget",
    "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
    "socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statx",
    "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill",
    "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
    "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times",
    "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat",
    "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4",
    "waitid", "waitpid", "write", "writev", "arch_prctl",
)  # fmt: skip
# clone's flags that make namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
# NEWNET): clone is allowed only without them, as in Docker's profile.
CLONE_NAMESPACE_FLAGS = 0x7E020000
AF_VSOCK = 40
# personality(2) values Docker's profile allows: PER_LINUX, UNAME26, ADDR_NO_RANDOMIZE (and
# with UNAME26), and the query 0xffffffff.
PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
PROFILE = (
    f"allow-list of {len(ALLOWED_SYSCALLS)} system calls (Docker's default profile, less the "
    "guard's), default EPERM; guard denying {denied} system calls and terminal injection"
)

# ioctl requests that inject input into, or take over, a terminal shared with the host.
TIOCSTI = 0x5412
TIOCLINUX = 0x541C


class SeccompUnavailableError(Exception):
    """libseccomp could not be loaded or the filter could not be built."""


def _load() -> Any:
    try:
        import pyseccomp
    except (ImportError, OSError) as exc:
        raise SeccompUnavailableError(f"libseccomp is not usable: {exc}") from None
    return pyseccomp


def _export(filt: Any) -> bytes:
    with tempfile.TemporaryFile() as out:
        filt.export_bpf(out)
        out.seek(0)
        program = out.read()
    if not program:
        raise SeccompUnavailableError("libseccomp produced an empty filter")
    return program


def _add(filt: Any, action: Any, name: str, *args: Any) -> bool:
    """Add one rule; False when `name` is not a system call of this architecture."""
    try:
        filt.add_rule(action, name, *args)
    except (OSError, ValueError, RuntimeError):
        return False
    return True


@cache
def allow_list_bpf() -> bytes:
    """The allow-list filter (default EPERM), compiled once."""
    seccomp = _load()
    filt = seccomp.SyscallFilter(seccomp.ERRNO(errno.EPERM))
    for name in ALLOWED_SYSCALLS:
        _add(filt, seccomp.ALLOW, name)
    _add(filt, seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NAMESPACE_FLAGS, 0))
    _add(filt, seccomp.ERRNO(errno.ENOSYS), "clone3")
    _add(filt, seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.NE, AF_VSOCK))
    for value in PERSONALITIES:
        _add(filt, seccomp.ALLOW, "personality", seccomp.Arg(0, seccomp.EQ, value))
    return _export(filt)


@cache
def guard_bpf() -> bytes:
    """The guard filter (default allow, DENIED_SYSCALLS and the terminal ioctls refused)."""
    seccomp = _load()
    filt = seccomp.SyscallFilter(seccomp.ALLOW)
    deny = seccomp.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        _add(filt, deny, name)
    for request in (TIOCSTI, TIOCLINUX):
        filt.add_rule(deny, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
    return _export(filt)


def filter_bpf() -> list[bytes]:
    """Both compiled programs, in the order bubblewrap gets them (cached)."""
    return [allow_list_bpf(), guard_bpf()]


def profile() -> str:
    """What the filters in force are, in one line (``sandboxd doctor`` prints it)."""
    return PROFILE.format(denied=len(DENIED_SYSCALLS))


def filter_fds() -> list[int]:
    """Fresh readable fds (memfds) holding the programs, each positioned at 0."""
    fds = []
    for program in filter_bpf():
        fd = os.memfd_create("sandboxd-seccomp", os.MFD_CLOEXEC)
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
        fds.append(fd)
    return fds
