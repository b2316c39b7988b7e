"""The seccomp filter every sandbox runs under: a deny-list of dangerous system calls.

Built once with libseccomp (pyseccomp) as classic BPF and handed to bubblewrap (`--seccomp FD`).
Denied calls fail with EPERM rather than killing the process, so ordinary programs that probe
for a feature (e.g. `unshare` in a test suite) see a clear error. Only the native architecture
is allowed: a 32-bit (int 0x80) or x32 system call kills the process, so the deny-list cannot be
bypassed through another ABI's numbers.
"""

from __future__ import annotations

import errno
import os
import tempfile
from functools import cache

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

# ioctl requests that inject input into, or take over, a terminal shared with the host.
TIOCSTI = 0x5412
TIOCLINUX = 0x541C


class SeccompUnavailableError(Exception):
    """libseccomp could not be loaded or the filter could not be built."""


@cache
def filter_bpf() -> bytes:
    """Return the compiled BPF program (cached: it is the same for every sandbox)."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as exc:
        raise SeccompUnavailableError(f"libseccomp is not usable: {exc}") from None
    filt = seccomp.SyscallFilter(seccomp.ALLOW)
    deny = seccomp.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        try:
            filt.add_rule(deny, name)
        except (OSError, ValueError, RuntimeError):
            continue  # not a system call on this architecture
    for request in (TIOCSTI, TIOCLINUX):
        filt.add_rule(deny, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
    with tempfile.TemporaryFile() as out:
        filt.export_bpf(out)
        out.seek(0)
        program = out.read()
    if not program:
        raise SeccompUnavailableError("libseccomp produced an empty filter")
    return program


def filter_fd() -> int:
    """Return a fresh readable fd (a memfd) holding the BPF program, positioned at 0."""
    fd = os.memfd_create("sandboxd-seccomp", os.MFD_CLOEXEC)
    os.write(fd, filter_bpf())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
