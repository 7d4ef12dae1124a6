//! Puts the git commit of the source into the binary, for `ha-ingestor --version`.
//!
//! The commit comes from `git rev-parse` when the source is a git checkout, else from
//! the `BUILD_COMMIT` variable (a container build passes it as a build argument, since
//! `.git` is not in the build context), else it is `unknown`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=BUILD_COMMIT");
    let commit = git(&["rev-parse", "--short=12", "HEAD"])
        .or_else(|| {
            std::env::var("BUILD_COMMIT")
                .ok()
                .filter(|c| !c.trim().is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=HA_INGESTOR_BUILD_COMMIT={}", commit.trim());
    // Rebuild when HEAD moves: HEAD itself (a branch switch) and the ref it names (a commit).
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={}", absolute(&head).display());
    }
    // A packed ref has no file of its own: its folder then shows the next commit's loose ref.
    if let Some(path) = git(&["symbolic-ref", "-q", "HEAD"])
        .and_then(|name| git(&["rev-parse", "--git-path", name.trim()]))
        .map(|p| absolute(&p))
        .and_then(|p| {
            if p.exists() {
                Some(p)
            } else {
                p.parent().filter(|d| d.exists()).map(PathBuf::from)
            }
        })
    {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    // Only a file that exists: cargo reruns the script at every build for a missing one
    // (a fresh clone's refs are loose, with no packed-refs), rebuilding the whole crate.
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"])
        .map(|p| absolute(&p))
        .filter(|p| p.exists())
    {
        println!("cargo:rerun-if-changed={}", packed.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The trimmed output of a successful `git` command run in the package's folder.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// A path git printed, made absolute against the package's folder.
fn absolute(path: &str) -> PathBuf {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        return path;
    }
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(path)
}
