//! README's first command: `switchboard demo` runs with nothing else
//! installed, converges every step (an app's, and a pod's), and exits 0.

mod common;

#[tokio::test]
async fn demo_converges_and_exits_zero() {
    let out = common::run_cli(common::s(&["demo"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for step in 1..=6 {
        assert!(stdout.contains(&format!("== step {step}:")), "step {step} missing:\n{stdout}");
    }
    assert_eq!(stdout.matches("converged in").count(), 6, "{stdout}");
    // The pod step: both containers' endpoints registered, at the agent's
    // host port (web) and the instance's container IP (the metrics sidecar).
    assert!(stdout.contains("deploy pod /shop/cart"), "{stdout}");
    assert_eq!(stdout.matches("consul   cart-metrics 9.0.").count(), 2, "{stdout}");
    assert!(stdout.contains("consul   cart         10.0.2."), "{stdout}");
    assert!(stdout.contains("every step converged"), "{stdout}");
}
