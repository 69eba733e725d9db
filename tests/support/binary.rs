//! The tokenjar binary under test: the one `E2E_TOKENJAR_BIN` names, or the
//! one cargo builds from this checkout, once per test process.
//!
//! Building here, rather than expecting a `cargo build` beforehand, lets a
//! fresh clone pass `cargo test --workspace` as it is, and means a test never
//! runs a binary older than the sources: the build is a no-op (well under a
//! second) when nothing changed. Cargo releases its lock on the target
//! directory before it runs the tests, so the nested cargo does not wait on
//! the one running the tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// Path of the tokenjar binary to test.
///
/// `E2E_TOKENJAR_BIN` names another binary to test instead (a release
/// build: `make soak`, benchmarks); nothing is built then. Otherwise the
/// first call runs `cargo build -p tokenjar --bin tokenjar` with the profile
/// and target directory of the running test binary, and every call in the
/// process returns what it built. Panics with cargo's output if the build
/// fails.
pub fn tokenjar_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("E2E_TOKENJAR_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "E2E_TOKENJAR_BIN={} is not a file", bin.display());
        return bin;
    }
    // The outcome is kept, a failure too: the tests of a process share one
    // build, and a compile error is reported by each without rebuilding.
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(bin) => bin.clone(),
        Err(problem) => panic!("{problem}"),
    }
}

/// Where and how the running test binary was built.
struct Layout {
    /// The target directory (`target`, or `--target-dir`/`CARGO_TARGET_DIR`).
    target_dir: PathBuf,
    /// The cargo profile whose output directory holds the test binary.
    profile: String,
    /// The `--target` triple, when the tests were built for one.
    triple: Option<String>,
}

impl Layout {
    /// Reads the layout off this process's path,
    /// `<target>[/<triple>]/<profile dir>/deps/<test>-<hash>`; `None` when the
    /// binary is not in a cargo target directory (then cargo's defaults
    /// apply).
    fn of_current_exe() -> Option<Self> {
        let exe = std::env::current_exe().ok()?;
        let deps = exe
            .parent()
            .filter(|dir| dir.file_name().is_some_and(|name| name == "deps"))?;
        let profile_dir = deps.parent()?;
        let profile = match profile_dir.file_name()?.to_str()? {
            // `dev` and `test` share `debug`; `release` and `bench` share
            // `release`; a custom profile's directory is its name.
            "debug" => "dev",
            other => other,
        }
        .to_owned();
        let above = profile_dir.parent()?;
        // Cargo marks the target directory's root with CACHEDIR.TAG; a
        // directory without it between the root and the profile's is the
        // `--target` triple's.
        let is_root = |dir: &Path| dir.join("CACHEDIR.TAG").is_file();
        match above.parent() {
            Some(root) if !is_root(above) && is_root(root) => Some(Self {
                target_dir: root.to_path_buf(),
                profile,
                triple: Some(above.file_name()?.to_str()?.to_owned()),
            }),
            _ => Some(Self {
                target_dir: above.to_path_buf(),
                profile,
                triple: None,
            }),
        }
    }
}

/// Runs cargo to build the tokenjar binary; its path (from cargo's JSON
/// messages, so no output layout is assumed), or what went wrong.
fn build() -> Result<PathBuf, String> {
    // Cargo sets CARGO for the processes it runs; a test binary started by
    // hand falls back to the one on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(crate::workspace_root().join("Cargo.toml"))
        .args(["-p", "tokenjar", "--bin", "tokenjar"])
        .arg("--message-format=json-render-diagnostics");
    // Cargo gives the running test the test package's CARGO_MANIFEST_DIR
    // and CARGO_PKG_* variables. Passed on, they would differ from the
    // environment the outer cargo built in, and a build script that watches
    // one (ring's watches CARGO_MANIFEST_DIR) would make both cargos rebuild
    // it, and everything above it, on every run.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_MANIFEST_") || name.starts_with("CARGO_PKG_") {
            cmd.env_remove(name.as_ref());
        }
    }
    if let Some(layout) = Layout::of_current_exe() {
        cmd.arg("--profile")
            .arg(&layout.profile)
            .arg("--target-dir")
            .arg(&layout.target_dir);
        if let Some(triple) = &layout.triple {
            cmd.arg("--target").arg(triple);
        }
    }
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("could not run {cmd:?}: {err}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "building the tokenjar binary failed ({}): {cmd:?}\n{stderr}",
            output.status
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "tokenjar")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("{cmd:?} named no tokenjar executable\n{stderr}"))
}
