//! `switchboard state`: what the store holds. Asks the running daemon's
//! status server first (the daemon holds the store's lock); opens the store
//! directly when no daemon answers.

use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::http::{StateReport, state_report};
use crate::store::{Store, StoreHandle};

pub async fn read(cfg: &Config) -> anyhow::Result<StateReport> {
    let url = format!("http://{}/state", cfg.listen);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().context("http client")?;
    if let Ok(resp) = client.get(&url).send().await
        && resp.status().is_success()
        && let Ok(report) = resp.json::<StateReport>().await
    {
        return Ok(report);
    }
    let store = Store::open(&cfg.data_dir)
        .with_context(|| format!("no daemon answered on {} and the store cannot be opened", cfg.listen))?;
    let store = StoreHandle::spawn(store)?;
    let names: Vec<&'static str> = crate::backends::KINDS.iter().map(|k| k.name).collect();
    Ok(store.call(move |s| state_report(s, &names)).await?)
}
