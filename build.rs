//! Build script: the git commit `switchboard --version` names.
//!
//! `SWITCHBOARD_GIT_COMMIT` wins when set (a build from a source tarball or a
//! container build context without `.git` passes it in); otherwise
//! `git rev-parse --short=12 HEAD`; "unknown" when neither works (no git, not
//! a checkout). Never touches the network.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=SWITCHBOARD_GIT_COMMIT");
    let from_env = std::env::var("SWITCHBOARD_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty());
    let commit = from_env.or_else(|| git(&["rev-parse", "--short=12", "HEAD"])).unwrap_or_else(|| "unknown".to_owned());
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it names
    // (a commit), packed refs. Works in worktrees (git dir != common dir).
    // A path that does not exist would rerun this script on every build: only existing ones.
    let mut watch: Vec<PathBuf> = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) {
        watch.push(dir.join("HEAD"));
        if let Some(common) = git(&["rev-parse", "--git-common-dir"]).map(PathBuf::from) {
            watch.push(common.join("packed-refs"));
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watch.push(common.join(branch));
            }
        }
    }
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=SWITCHBOARD_COMMIT={commit}");
}
