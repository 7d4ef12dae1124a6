//! Runs one test alone in a fresh process of its own test binary.
//!
//! The tests of a binary share one process. A few need process-wide state to
//! themselves: the global `tracing` subscriber (the status page's "recent errors"),
//! or the metrics registry that alert rules read (another test's topology writing
//! points would keep a "no writes" rule from firing). Such a test starts with
//!
//! ```ignore
//! if !support::alone::in_own_process(concat!(module_path!(), "::this_test")).await {
//!     return; // the child ran the body and passed
//! }
//! // … the body, now the only test in this process …
//! ```
//!
//! In the test runner's process this re-runs the binary with `--exact` on that one
//! test, marked by an environment variable, and fails unless exactly that test ran
//! and passed (a misspelt name runs nothing and fails). The child's output is printed
//! through the runner's capture: shown when the test fails or with `--nocapture`.

/// Names the test the child process must run itself (never `HA_INGESTOR_…`: the config reads those).
const MARK: &str = "TEST_SUPPORT_OWN_PROCESS";

/// `true` in the child: run the test body. In the runner's process: runs the child, asserts it passed, `false`.
///
/// `test` is the test's path as `module_path!()` gives it plus `::` and the function's
/// name; the binary's own name (its first segment) is dropped to make libtest's name.
pub async fn in_own_process(test: &str) -> bool {
    let name = test.split_once("::").map_or(test, |(_, rest)| rest);
    if std::env::var_os(MARK).is_some_and(|v| v == name) {
        return true;
    }
    let exe = std::env::current_exe().expect("the path of this test binary");
    let out = tokio::process::Command::new(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(MARK, name)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} {name} starts: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "{name} failed in its own process ({}); its output is above",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{name} did not run in its own process (a wrong name?); its output is above"
    );
    false
}
