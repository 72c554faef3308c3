//! README's first command: `switchboard demo` runs with nothing else
//! installed, converges every step, and exits 0.

mod common;

#[tokio::test]
async fn demo_converges_and_exits_zero() {
    let out = common::run_cli(common::s(&["demo"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for step in 1..=5 {
        assert!(stdout.contains(&format!("== step {step}:")), "step {step} missing:\n{stdout}");
    }
    assert_eq!(stdout.matches("converged in").count(), 5, "{stdout}");
    assert!(stdout.contains("every step converged"), "{stdout}");
}
