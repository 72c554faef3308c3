//! The store's format: a data dir written before formats were stamped
//! (`tests/fixtures/store-unversioned`) and one written by the format-1 store
//! (`tests/fixtures/store-format1`, with what that store read back from it)
//! are migrated in place with every record kept; a newer format is refused
//! with a clear error, through the library and through the binary.

mod common;

use std::path::{Path, PathBuf};

use common::s;
use switchboard::store::{FORMAT, Store};

fn copy_fixture(to: &Path) -> PathBuf {
    copy_dir("tests/fixtures/store-unversioned", to)
}

fn copy_dir(fixture: &str, to: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join(fixture);
    let dir = to.join("data");
    std::fs::create_dir_all(&dir).expect("data dir");
    for entry in std::fs::read_dir(&from).expect("fixture") {
        let entry = entry.expect("entry");
        if !entry.file_type().expect("type").is_file() {
            continue; // sled's empty `blobs/`, which git does not keep anyway
        }
        std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
    }
    dir
}

/// `Store::open`, waiting (up to 10 s) while a store dropped just before
/// still holds its lock: sled releases the lock from a background thread.
fn open_when_free(dir: &Path) -> Result<Store, switchboard::store::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir) {
            Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[test]
fn an_unversioned_store_is_read_and_stamped_in_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = copy_fixture(tmp.path());
    {
        let store = Store::open(&dir).expect("today's release reads the old store");
        // The ledger is the only ownership record for Vulcand and old Kong: it must survive.
        let ids = |b: &str| store.ledger(b).expect("ledger").into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids("vulcand"), ["web.a1:31000"]);
        assert_eq!(ids("kong"), ["api.b2:31001"]);
        assert_eq!(store.queued("consul").expect("queue").len(), 1, "queued ops are kept");
        assert_eq!(store.format().expect("format"), Some(FORMAT));
    }
    let store = open_when_free(&dir).expect("reopen");
    assert_eq!(store.format().expect("format"), Some(FORMAT), "the stamp is durable");
}

/// `v` with each array sorted by its elements' JSON text (format 2 keys
/// records by app first, so listings come in another order).
/// Arrays sorted, and the fields added after the fixture was made (pods:
/// `containers` of an instance, `pod` of a spec) left out where they hold
/// their default, which is what a record from before them reads as.
fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Array(items) => {
            let mut items: Vec<serde_json::Value> = items.into_iter().map(sorted).collect();
            items.sort_by_key(|i| i.to_string());
            serde_json::Value::Array(items)
        }
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter(|(k, v)| {
                !((k == "containers" && v.as_object().is_some_and(|m| m.is_empty())) || (k == "pod" && v.is_null()))
            })
            .map(|(k, v)| (k, sorted(v)))
            .collect(),
        other => other,
    }
}

fn json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).expect("json")
}

/// Everything `expected.json` lists, read through today's store.
fn read_all(store: &Store) -> serde_json::Value {
    let backends = ["consul", "kong", "vulcand"];
    let per = |f: &dyn Fn(&str) -> serde_json::Value| -> serde_json::Value {
        backends.iter().map(|b| (b.to_string(), f(b))).collect::<serde_json::Map<_, _>>().into()
    };
    let specs: Vec<_> = store.newest_specs().expect("specs").into_values().collect();
    serde_json::json!({
        "instances": json(store.instances().expect("instances")),
        "apps": json(store.apps().expect("apps")),
        "specs": json(specs),
        "ledger": per(&|b| json(store.ledger(b).expect("ledger"))),
        "queue": per(&|b| json(store.queued(b).expect("queue"))),
        "refusals": json(store.all_refusals().expect("refusals")),
        "intents": per(&|b| json(store.intents(b).expect("intents"))),
        "pending": json(store.pending().expect("pending")),
        "rejections": json(store.rejections().expect("rejections")),
        "high_water": json(store.high_water().expect("high water")),
        "last_resync": json(store.last_resync().expect("last resync")),
    })
}

#[test]
fn a_format1_store_is_migrated_in_place_and_keeps_every_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = copy_dir("tests/fixtures/store-format1/data", tmp.path());
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-format1/expected.json"),
    )
    .expect("expected.json");
    let mut expected: serde_json::Value = serde_json::from_str(&text).expect("expected.json is JSON");
    let seq_before = expected["seq_at_least"].as_u64().expect("seq_at_least");
    expected.as_object_mut().expect("object").remove("seq_at_least");
    assert!(expected["ledger"]["vulcand"].as_array().is_some_and(|l| l.len() == 2), "the fixture has data");
    {
        let store = Store::open(&dir).expect("format 1 is migrated");
        assert_eq!(store.format().expect("format"), Some(FORMAT));
        assert_eq!(sorted(read_all(&store)), sorted(expected.clone()));
        assert!(store.ledger_holds_service("vulcand", "api-v2").expect("index"), "the service index is built");
        assert!(store.next_seq().expect("seq") > seq_before, "the sequence carries on");
    }
    let store = open_when_free(&dir).expect("reopen");
    assert_eq!(store.format().expect("format"), Some(FORMAT), "the stamp is durable");
    assert_eq!(sorted(read_all(&store)), sorted(expected), "and so is every record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_format_is_refused_naming_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = copy_fixture(tmp.path());
    Store::open(&dir).expect("open").stamp_format(FORMAT + 1).expect("stamp");
    let err = open_when_free(&dir).err().expect("a newer format is refused").to_string();
    assert!(err.contains(&format!("has format {}", FORMAT + 1)) && err.contains("newer"), "{err}");

    // Through the binary: `state` with no daemon opens the store and says why it cannot.
    let listen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let data = dir.display().to_string();
    // (The store the test just failed to open may still hold sled's lock for a moment.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (out, stderr) = loop {
        let out = common::run_cli(s(&["state", "--data-dir", &data, "--listen", &listen])).await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !stderr.contains("could not acquire lock") || std::time::Instant::now() > deadline {
            break (out, stderr);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("newer than this switchboard reads"), "{stderr}");
    // The data dir is left as it was.
    let store_format = open_when_free(&dir).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(store_format.contains(&format!("has format {}", FORMAT + 1)), "{store_format}");
}
