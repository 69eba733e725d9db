//! External programs some end-to-end tests drive (Chromium, chromedriver,
//! nginx): finding them, skipping cleanly when they are absent, and signalling
//! the processes a test started.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Finds program `name`: the first existing file among `preferred` (the
/// Debian package's path, which the tests are written against), else the
/// first `name` on `PATH`.
pub fn find_program(name: &str, preferred: &[&str]) -> Option<PathBuf> {
    let fixed = preferred.iter().map(PathBuf::from).find(|path| path.is_file());
    fixed.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
    })
}

/// Whether this run is CI's (`CI=true`), where a missing tool is a failure:
/// a suite that silently skips there would prove nothing.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Returns the programs if every one was found. Otherwise prints
/// `skipped: <what> not installed (<install>)` and returns `None` so the test
/// can return early, except under CI, where it panics with the same message.
pub fn programs_or_skip(found: Vec<Option<PathBuf>>, what: &str, install: &str) -> Option<Vec<PathBuf>> {
    if found.iter().all(Option::is_some) {
        return Some(found.into_iter().flatten().collect());
    }
    let problem = format!("{what} not installed ({install})");
    assert!(!in_ci(), "CI=true forbids skipping: {problem}");
    println!("skipped: {problem}");
    None
}

/// Sends `signal` (a name such as `KILL` or `TERM`) to process `pid`, or to
/// the whole process group `pid` when `group` is set (a browser's helpers
/// must not outlive the test). Uses the system's `kill`, so the suite needs no
/// FFI; errors (e.g. the process is already gone) are ignored.
pub fn send_signal(pid: u32, signal: &str, group: bool) {
    let target = if group { format!("-{pid}") } else { pid.to_string() };
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The workspace's target directory (honouring `CARGO_TARGET_DIR`), where
/// tests leave artefacts for a person to look at.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => crate::workspace_root().join(dir),
        None => crate::workspace_root().join("target"),
    }
}

#[cfg(test)]
mod tests {
    use super::find_program;

    #[test]
    fn finds_programs_on_the_path() {
        assert!(find_program("sh", &["/nonexistent/sh"]).is_some());
        assert!(find_program("no-such-program-tokenjar", &[]).is_none());
    }
}
