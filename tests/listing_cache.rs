// The listing cache (`<cluster>/listing-cache.json.zst`): backup fills it, prune empties it of
// what it removed; `list` reads it, and a forged entry gains nothing, since commands that act
// read the manifests in the store.

use crate::signing::Signed;
use crate::support::*;

/// A cluster's listing cache: its path and its JSON.
fn read_cache(w: &World, cluster: &str) -> (std::path::PathBuf, serde_json::Value) {
    let path = w.store.join(format!("{cluster}/listing-cache.json.zst"));
    let packed = std::fs::read(&path).expect("the backup wrote its cluster's listing cache");
    let cache = serde_json::from_slice(&zstd::decode_all(&packed[..]).unwrap()).unwrap();
    (path, cache)
}

/// The keys a cluster's listing cache holds.
fn cached_keys(w: &World, cluster: &str) -> Vec<String> {
    let mut keys: Vec<String> = read_cache(w, cluster).1["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

// Each backup adds itself to its cluster's listing cache; pruned manifests leave it (it
// held them until the next backup), and a cluster with no backup left has no cache.
#[test]
fn backup_fills_the_listing_cache_and_prune_empties_it_of_what_it_removed() {
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 2);
    let refs: Vec<String> = (0..3)
        .map(|_| w.backup(&["--etcd-snapshot-file", "s.db"]))
        .collect();
    let mut manifests: Vec<String> = refs.iter().map(|r| format!("{r}.manifest.json")).collect();
    manifests.sort();
    assert_eq!(cached_keys(&w, "admin"), manifests);
    let out = w.run(&["prune", "--keep-last", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let left: Vec<String> = manifests
        .into_iter()
        .filter(|k| w.store.join(k).exists())
        .collect();
    assert_eq!(left.len(), 1);
    assert_eq!(cached_keys(&w, "admin"), left);

    // The last backup, broken (its archive gone) and removed: no cache is left behind.
    let last = left[0].strip_suffix(".manifest.json").unwrap();
    std::fs::remove_file(w.archive(last)).unwrap();
    let out = w.run(&["prune", "--keep-last", "1", "--remove-broken"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!w.store.join("admin/listing-cache.json.zst").exists());
}

/// Rewrites the text of one entry of a cluster's listing cache (as a hostile store could)
/// and returns the text it held.
fn edit_listing_cache(
    w: &World,
    cluster: &str,
    key: &str,
    edit: impl Fn(&str) -> String,
) -> String {
    let mut before = String::new();
    edit_listing_cache_entry(w, cluster, key, |e| {
        before = e["text"].as_str().unwrap().to_string();
        e["text"] = edit(&before).into();
    });
    before
}

/// Rewrites one entry of a cluster's listing cache.
fn edit_listing_cache_entry(
    w: &World,
    cluster: &str,
    key: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let (path, mut cache) = read_cache(w, cluster);
    let entry = cache["objects"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["key"] == key)
        .expect("the manifest is cached");
    edit(entry);
    let json = serde_json::to_vec(&cache).unwrap();
    std::fs::write(&path, zstd::encode_all(&json[..], 3).unwrap()).unwrap();
}

// The listing cache is what `list` reads (an edited entry that matches the listing shows),
// and it gains a forger nothing: with allowed signers the edited bytes fail the signature as
// an edited manifest object would, and commands that act (verify, latest) read the store.
#[test]
fn a_forged_listing_cache_entry_is_judged_like_a_forged_manifest() {
    let s = Signed::new();
    let w = &s.w;
    let reference = s.backup();
    let key = format!("{reference}.manifest.json");
    let forge = |t: &str| {
        let forged = t.replacen("\"created\": \"2", "\"created\": \"1", 1);
        assert_eq!(forged.len(), t.len());
        forged
    };
    let genuine = edit_listing_cache(w, "admin", &key, forge);
    assert!(genuine.contains("\"created\": \"2"), "{genuine}");

    let listed = w.run(&["list", "--output", "json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0]["created"].as_str().unwrap().starts_with('1'),
        "the cache was not read: {}",
        listed[0]
    );
    let judged = w.run(&["list", "--allowed-signers", s.allowed(), "--output", "json"]);
    assert!(judged.status.success(), "{}", stderr(&judged));
    let judged: Vec<serde_json::Value> = serde_json::from_slice(&judged.stdout).unwrap();
    assert_eq!(
        judged[0]["signature"]["state"], "untrusted",
        "{}",
        judged[0]
    );
    // The manifest in the store is genuine, and that is what verify judges.
    let verified = w.run(&["verify", "--all", "--allowed-signers", s.allowed()]);
    assert!(verified.status.success(), "{}", stderr(&verified));

    // The other way round: the manifest object forged, and the cache made to carry the
    // genuine text under what the store now lists for it. Commands that act read the store.
    std::fs::write(w.manifest(&reference), forge(&genuine)).unwrap();
    let store = cpvault_backends::Store::open(w.store.to_str().unwrap(), false).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listed = rt.block_on(store.list(Some("admin/"))).unwrap();
    let now = listed.iter().find(|o| o.key == key).unwrap();
    edit_listing_cache_entry(w, "admin", &key, |e| {
        e["text"] = genuine.clone().into();
        e["last_modified"] = serde_json::to_value(now.last_modified).unwrap();
        e["e_tag"] = now.e_tag.clone().into();
    });
    // The entry is live: `list` shows the genuine signed text it holds.
    let shown = w.run(&["list", "--allowed-signers", s.allowed(), "--output", "json"]);
    let shown: Vec<serde_json::Value> = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown[0]["signature"]["state"], "trusted", "{}", shown[0]);
    assert!(
        shown[0]["created"].as_str().unwrap().starts_with('2'),
        "the cache was not read: {}",
        shown[0]
    );
    let verified = w.run(&["verify", "--all", "--allowed-signers", s.allowed()]);
    assert_eq!(verified.status.code(), Some(3), "{}", stdout(&verified));
    let latest = w.run(&["verify", "admin/latest", "--allowed-signers", s.allowed()]);
    assert_eq!(latest.status.code(), Some(3), "{}", stdout(&latest));
    assert!(
        stdout(&latest).contains("no trusted backup"),
        "{}",
        stdout(&latest)
    );
    let out = w.path("out");
    let restore = s.extract_trusted("admin/latest", &out);
    assert_eq!(restore.status.code(), Some(1), "{}", stderr(&restore));
    assert!(!out.exists());
}
