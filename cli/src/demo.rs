//! `mlsd demo`: the eight steps of the brief on a three-node cluster inside
//! this process (real QUIC, real RocksDB, in a temporary directory), printed
//! as they happen. The second thing a newcomer runs.

use mlsd_transport::protocol::{IdsRequest, IdsResponse, RosterMode};
use std::time::Instant;

use anyhow::Context;
use mlsd_client::group::Event;
use mlsd_client::Client;
use mlsd_transport::Role;

use crate::inproc::InprocCluster;
use mlsd_node::{routing, ClusterConfig};

fn owner(cfg: &ClusterConfig, role: Role, key: &[u8]) -> String {
    routing::owner(cfg, role, key).map(|n| n.name.clone()).unwrap_or_default()
}

/// Runs the demo; prints to stdout.
pub async fn run() -> anyhow::Result<()> {
    let layout: [(&str, &str); 3] =
        [("n1", "\"as\", \"cs\""), ("n2", "\"ids\", \"sds\""), ("n3", "\"ods\"")];
    let cluster = InprocCluster::start("demo", &layout, "").await?;
    let cfg = cluster.config.clone();
    println!("mlsd demo: three nodes in {}", cluster.dir().display());
    for ((name, roles), node) in layout.iter().zip(&cluster.nodes) {
        println!("  {name} on {} hosts {}", node.addr(), roles.replace('"', ""));
    }
    let client_cfg = |home: &str, via: usize| cluster.client_config(home, via);
    let (mut alice, mut bob, mut charlie) = (
        Client::open(&client_cfg("alice", 0)).await?,
        Client::open(&client_cfg("bob", 1)).await?,
        Client::open(&client_cfg("charlie", 2)).await?,
    );

    println!("\nStep 1. Each client binds its signature key to its identity at the AS.");
    for (c, id) in
        [(&mut alice, "alice/phone"), (&mut bob, "bob/laptop"), (&mut charlie, "charlie/phone")]
    {
        let b = c.register(id, None).await?;
        let who = id.split('/').next().unwrap_or(id);
        println!(
            "  {id}: Ed25519 key of {} bytes bound by the AS on {} (serial {}), AS signature {} bytes; mailbox opened at the ODS on {}",
            b.binding.signature_key.len(),
            owner(&cfg, Role::As, who.as_bytes()),
            b.binding.serial,
            b.signature.len(),
            owner(&cfg, Role::Ods, &c.mailbox_keys().context("mailbox")?.id),
        );
    }

    println!("\nStep 2. Each client publishes KeyPackages at the CS, signed by the bound key.");
    for (c, who) in [(&mut alice, "alice"), (&mut bob, "bob"), (&mut charlie, "charlie")] {
        let n = c.publish(5).await?;
        println!(
            "  {who}: {n} one-time KeyPackages and a last-resort one, stored by the CS on {}",
            owner(&cfg, Role::Cs, who.as_bytes())
        );
    }

    println!("\nSteps 3 and 4. Bob fetches KeyPackages of Alice and Charlie from the CS and authenticates them against the AS.");
    for who in ["alice", "charlie"] {
        let bindings = bob.lookup(who).await?;
        for (b, ok) in &bindings {
            println!(
                "  binding of {}: {}",
                b.binding.client,
                if ok.is_ok() { "AS signature verified" } else { "REJECTED" }
            );
        }
    }

    println!("\nStep 5. Bob creates group ABC at the IDS, adds Alice and Charlie (one commit with their Welcomes), and sends a message.");
    bob.create_group("ABC", RosterMode::Stored).await?;
    let gid = bob.group_id("ABC")?;
    println!(
        "  group id {} bytes, ordered by the IDS on {}",
        gid.len(),
        owner(&cfg, Role::Ids, &gid)
    );
    let t = Instant::now();
    let epoch = bob.add_members("ABC", &["alice", "charlie"]).await?;
    println!("  commit accepted for epoch {}, Welcomes sealed to the new members' mailbox keys ({:.1} ms)", epoch - 1, t.elapsed().as_secs_f64() * 1e3);
    let req = bob.prepare_text("ABC", "Hello Alice and Charlie!")?;
    let mls_len = match &req {
        mlsd_transport::Request::Ids(IdsRequest::Send { body, .. }) => body.message.len(),
        _ => 0,
    };
    let t = Instant::now();
    let resp = bob.send_request(req).await?;
    println!("  \"Hello Alice and Charlie!\": MLS message of {mls_len} bytes sent with the roster key and a MAC under the epoch auth key");

    println!(
        "\nStep 6. The IDS maps ABC to its roster and one anonymizer per recipient seals a copy."
    );
    if let mlsd_transport::Response::Ids(IdsResponse::Sent { copies }) = resp {
        println!("  {copies} copies, each sealed under its recipient's envelope key with a fresh nonce, padded to a size bucket, enqueued in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    }

    println!("\nStep 7. The ODS stores each copy in its recipient's mailbox; the recipients fetch, open and acknowledge.");
    for (c, who) in [(&mut alice, "alice"), (&mut charlie, "charlie")] {
        let keys = c.mailbox_keys().context("mailbox")?;
        let waiting =
            mlsd_client::mailbox::fetch(c.connection(), keys, &mut Default::default(), 0, 100)
                .await?;
        let sizes: Vec<usize> = waiting.iter().map(|d| d.envelope.len()).collect();
        println!("  {who}'s mailbox on {}: {} envelopes of {:?} bytes, no group, sender or epoch attached", owner(&cfg, Role::Ods, &keys.id), waiting.len(), sizes);
        for e in c.receive().await? {
            match e {
                Event::Joined { group } => println!("  {who} joined {group}"),
                Event::Message { group, sender, text } => {
                    println!("  {who} reads in {group}: {sender}: {text}")
                }
                _ => {}
            }
        }
    }

    println!("\nStep 8. Charlie retrieves encrypted group data from the SDS: the group's name, and a file Alice shares.");
    println!("  Charlie knows the group as {:?} (read from the SDS at an id derived from the epoch's secrets)", charlie.group_names());
    let file = cluster.dir().join("minutes.txt");
    std::fs::write(&file, "Meeting at noon.\n")?;
    alice.send_file("ABC", &file).await?;
    for e in charlie.receive().await? {
        if let Event::File { sender, path, .. } = e {
            println!("  file from {sender}: downloaded from the SDS on {}, decrypted, hash checked, saved to {}", owner(&cfg, Role::Sds, b""), path.display());
            println!("  it says: {}", std::fs::read_to_string(&path)?.trim());
        }
    }

    println!("\nDone: all eight steps. Shutting the cluster down.");
    drop((alice, bob, charlie));
    cluster.shutdown().await;
    Ok(())
}
