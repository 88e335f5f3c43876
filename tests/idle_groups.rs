//! Groups idle for `[ids] idle_group_days` are collected: their records
//! are deleted and their id is free again (issue "abuse resistance":
//! quotas). The sweep runs with each group creation, so a flood of new
//! groups pays for the collection of old ones.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{settled, Cluster};
use mlsd_actors::RocksStore;
use mlsd_client::ClientError;
use mlsd_roles::{Batch, Space, Store};
use mlsd_transport::protocol::{IdsError, RosterMode};
use mlsd_transport::{Response, Role, WireError};

const IDS: Space = Space::Role(Role::Ids);

/// The idle-index key of `group` under `day` (`i/DAY/LEN/GROUP`).
fn idle_key(day: u32, group: &[u8]) -> Vec<u8> {
    // Under shard 0's prefix, where the one IDS shard keeps its keys.
    let mut k = b"\0\0i/".to_vec();
    k.extend_from_slice(&day.to_be_bytes());
    k.push(group.len() as u8);
    k.extend_from_slice(group);
    k
}

/// Whether any IDS key holds `group`'s id.
fn ids_keys_name(dir: &std::path::Path, group: &[u8]) -> bool {
    settled(dir)
        .keys()
        .any(|(space, k)| space == "ids" && k.windows(group.len()).any(|w| w == group))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_idle_past_idle_group_days_is_collected_at_the_next_creation() {
    let _watchdog = common::init();
    // One IDS shard: a creation sweeps the idle index of its own shard.
    let mut c = Cluster::configured(&[("n1", &Role::ALL)], "shards = 1\n", "");
    c.start_all().await;
    let mut alice = c.registered("alice/phone", "n1", 2).await;
    let _bob = c.registered("bob/phone", "n1", 2).await;
    alice.create_group("old", RosterMode::Stored).await.unwrap();
    alice.add_members("old", &["bob"]).await.unwrap();
    alice.send_text("old", "before it went quiet").await.unwrap();
    alice.create_group("recent", RosterMode::Client).await.unwrap();
    let (old, recent) = (alice.group_id("old").unwrap(), alice.group_id("recent").unwrap());
    let data = c.dir.path().join("data/n1");
    assert!(ids_keys_name(&data, &old));

    // As if old's last send were 400 days ago (the default is 365): the
    // node stopped, its activity day moved back.
    c.kill("n1");
    let today = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400) as u32;
    let store = RocksStore::open(&data, true).unwrap();
    let mut b = Batch::new();
    b.delete(IDS, idle_key(today, &old));
    b.put(IDS, idle_key(today - 400, &old), Vec::new());
    b.put(IDS, [b"\0\0t/".as_slice(), &old].concat(), (today - 400).to_be_bytes().to_vec());
    store.write(b).unwrap();
    drop(store);
    c.start("n1").await;
    alice.reconnect().await.unwrap();

    // The next group creation sweeps it, and only it.
    alice.create_group("new", RosterMode::Client).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ids_keys_name(&data, &old) {
        assert!(tokio::time::Instant::now() < deadline, "the idle group was not collected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ids_keys_name(&data, &recent), "a group active today is kept");

    // A send to it is refused by name: the IDS knows no such group.
    let send = alice.prepare_text("old", "after a year").unwrap();
    let err = match alice.send_request(send).await {
        Err(ClientError::Server(e)) | Ok(Response::Error(e)) => e,
        other => panic!("not refused: {other:?}"),
    };
    assert_eq!(err, WireError::Ids(IdsError::UnknownGroup));
    // The recent group still delivers.
    alice.send_text("recent", "still here").await.unwrap();
}
