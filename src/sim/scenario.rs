//! The benchmark scenario: which apps `switchboard sim` pre-loads into its
//! Marathon, with a label mix that exercises all three backends, and the
//! deterministic disorder applied to an event storm.
//!
//! Invariant: pure (no I/O, no clock); the same inputs and seed give the same
//! apps and the same event order.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// `apps` apps of `instances` instances each. Every app is registered in
/// Consul; apps `i % 4 ∈ {1, 3}` are also published on Kong and apps
/// `i % 4 ∈ {2, 3}` routed in Vulcand (half each, a quarter in all three).
/// Every app has an HTTP health check, so instances count once healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub apps: usize,
    pub instances: usize,
}

/// How many registrations each backend should hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PerBackend {
    pub consul: usize,
    pub kong: usize,
    pub vulcand: usize,
}

impl Scenario {
    pub fn app_id(i: usize) -> String {
        format!("/bench/app-{i:05}")
    }

    pub fn on_kong(i: usize) -> bool {
        i % 2 == 1
    }

    pub fn on_vulcand(i: usize) -> bool {
        i % 4 >= 2
    }

    /// The definition of app `i`, as an operator would POST it.
    pub fn app_definition(i: usize) -> Value {
        let name = format!("app-{i:05}");
        let mut labels = serde_json::Map::new();
        labels.insert("consul".into(), json!(""));
        labels.insert("bench".into(), json!("tag"));
        if Scenario::on_kong(i) {
            labels.insert("kong.hosts".into(), json!(format!("{name}.bench.example.com")));
            labels.insert("kong.paths".into(), json!("/"));
        }
        if Scenario::on_vulcand(i) {
            labels.insert("vulcand.host".into(), json!(format!("{name}.bench.internal")));
        }
        json!({
            "id": Scenario::app_id(i),
            "cmd": "python3 -m http.server $PORT0",
            "cpus": 0.1, "mem": 64,
            "labels": labels,
            "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}],
            "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0,
                              "intervalSeconds": 10, "timeoutSeconds": 2, "maxConsecutiveFailures": 3}]
        })
    }

    /// Registrations each backend holds once everything converged.
    pub fn expected(&self) -> PerBackend {
        let kong_apps = (0..self.apps).filter(|i| Scenario::on_kong(*i)).count();
        let vulcand_apps = (0..self.apps).filter(|i| Scenario::on_vulcand(*i)).count();
        PerBackend {
            consul: self.apps * self.instances,
            kong: kong_apps * self.instances,
            vulcand: vulcand_apps * self.instances,
        }
    }
}

/// Puts about `share` of `events` out of order: random pairs at most
/// `window` apart swap places (a swap displaces two events). Returns how many
/// events are no longer where they were.
pub fn disorder<T>(events: &mut [T], share: f64, window: usize, seed: u64) -> usize {
    let n = events.len();
    if n < 2 || share <= 0.0 || window == 0 {
        return 0;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut moved = vec![false; n];
    let wanted = ((share.min(1.0) * n as f64) / 2.0).round() as usize;
    for _ in 0..wanted {
        let i = rng.random_range(0..n - 1);
        let j = (i + rng.random_range(1..=window)).min(n - 1);
        events.swap(i, j);
        moved[i] = true;
        moved[j] = true;
    }
    moved.iter().filter(|m| **m).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_mix_covers_every_backend() {
        let s = Scenario { apps: 8, instances: 3 };
        assert_eq!(s.expected(), PerBackend { consul: 24, kong: 12, vulcand: 12 });
        let labels = |i| Scenario::app_definition(i)["labels"].clone();
        assert_eq!(labels(0).get("kong.hosts"), None);
        assert_eq!(labels(1)["kong.hosts"], "app-00001.bench.example.com");
        assert_eq!(labels(2)["vulcand.host"], "app-00002.bench.internal");
        let all = labels(3);
        assert!(all.get("consul").is_some() && all.get("kong.hosts").is_some() && all.get("vulcand.host").is_some());
        assert_eq!(Scenario::app_definition(7)["id"], "/bench/app-00007");
        assert!(Scenario::app_definition(0)["healthChecks"][0].is_object());
    }

    #[test]
    fn expected_counts_for_odd_sizes() {
        assert_eq!(Scenario { apps: 1, instances: 5 }.expected(), PerBackend { consul: 5, kong: 0, vulcand: 0 });
        assert_eq!(Scenario { apps: 3, instances: 2 }.expected(), PerBackend { consul: 6, kong: 2, vulcand: 2 });
        assert_eq!(Scenario { apps: 0, instances: 9 }.expected(), PerBackend::default());
    }

    #[test]
    fn disorder_keeps_every_event_and_moves_about_the_share() {
        let mut v: Vec<usize> = (0..10_000).collect();
        let moved = disorder(&mut v, 0.2, 64, 7);
        let out_of_place = v.iter().enumerate().filter(|(i, x)| i != *x).count();
        assert!((1_600..=2_000).contains(&moved), "{moved}");
        assert!(out_of_place <= moved);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10_000).collect::<Vec<_>>());
        let mut again: Vec<usize> = (0..10_000).collect();
        disorder(&mut again, 0.2, 64, 7);
        assert_eq!(v, again, "same seed, same order");
        let mut none: Vec<usize> = (0..10).collect();
        assert_eq!(disorder(&mut none, 0.0, 64, 7), 0);
    }
}
