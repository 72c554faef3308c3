//! (stub) demo
pub async fn run(_keep_running: bool) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
