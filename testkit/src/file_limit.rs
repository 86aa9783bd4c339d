//! A process whose file writes the operating system refuses past a size: the
//! closest thing to a full disk that needs no privileges.
//!
//! The limit is `RLIMIT_FSIZE`, set by util-linux's `prlimit` (present on every
//! Debian): a write that would grow a file past it writes what fits and then
//! fails with EFBIG ("File too large"), as a write to a full disk fails with
//! ENOSPC. It applies to each regular file the process writes, not to pipes or
//! sockets. The kernel also sends SIGXFSZ, which kills by default; a shell sets
//! it to ignored first (an ignored signal stays ignored across `exec`), so the
//! process sees the error instead. This is what a `pre_exec` with `setrlimit`
//! and `signal` would do, without the `unsafe` the workspace forbids.

use std::process::Command;

/// `cmd` — same program, arguments, environment and working directory — run
/// with every file it writes limited to `bytes`.
pub fn file_size_limited(cmd: &Command, bytes: u64) -> Command {
    let mut limited = Command::new("sh");
    limited
        .arg("-c")
        .arg(r#"trap '' XFSZ; exec prlimit --fsize="$0" -- "$@""#)
        .arg(bytes.to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => limited.env(key, value),
            None => limited.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        limited.current_dir(dir);
    }
    limited
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_past_the_limit_fail_with_efbig_and_do_not_kill() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"head -c 1000 /dev/zero > "$TARGET"; echo "exit=$?""#)
            .env("TARGET", &file);
        let out = file_size_limited(&cmd, 100).output().unwrap();
        assert!(out.status.success(), "killed: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "exit=1");
        assert!(String::from_utf8_lossy(&out.stderr).contains("File too large"));
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 100);
    }
}
