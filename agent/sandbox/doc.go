// Package sandbox confines the vendor's application, which the appliance
// runs but does not trust, the way systemd's service sandboxing and
// Talos's extension services do:
//
//   - a root of its own (Root): a tmpfs holding read-only binds of the
//     system folders, its slot read-only, its data folder, a private /tmp,
//     a minimal /dev and a /proc that shows only its own processes; the
//     agent's data (/data/keel, the ESP, the other slots) is not in it;
//   - a cgroup v2 of its own (Cgroup): pids.max, memory.max and a CPU
//     weight, killed whole with cgroup.kill on stop, so nothing it forked
//     or detached with setsid outlives it;
//   - in the process, before the application's binary runs (Exec, the
//     agent binary re-run as "keel-sandbox-exec"): no_new_privs,
//     RLIMIT_NPROC and a seccomp filter refusing what systemd's
//     SystemCallFilter=@system-service leaves out (mounts, modules,
//     reboot, swap, the clock, raw I/O, tracing, namespaces, keyrings,
//     BPF).
package sandbox
