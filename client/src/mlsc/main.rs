//! `mlsc`: the command-line client of mlsd.
//!
//! Every error is one line on stderr and a non-zero exit. Application
//! messages go to stdout as `GROUP SENDER: TEXT`; joins, commits and removals
//! are reported on stderr so scripts can read stdout alone.

mod args;

use args::{Cli, Cmd, DeviceCmd, GroupCmd, MailboxCmd, Roster, DEFAULT_KEY_PACKAGES};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mlsd_client::devices::{normalize_code, Revoked};
use mlsd_client::group::Event;
use mlsd_client::members::MemberStatus;
use mlsd_client::outbox::{self, Outcome, Report};
use mlsd_client::owed::Owes;
use mlsd_client::shown::shown;
use mlsd_client::{Client, ClientConfig, ClientError, Connection};
use mlsd_transport::protocol::r#as::fingerprint;
use mlsd_transport::protocol::RosterMode;

fn main() {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mlsc: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("mlsc: {e:#}");
        std::process::exit(1);
    }
}

fn config(cli: &Cli) -> anyhow::Result<ClientConfig> {
    let home = match &cli.home {
        Some(h) => h.clone(),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .ok_or_else(|| anyhow::anyhow!("HOME is not set; pass --home"))?,
        )
        .join(".mlsc"),
    };
    Ok(ClientConfig { home, server: cli.server, ca: cli.ca.clone(), as_key: cli.as_key.clone() })
}

/// Opens the client: completes a registration that was approved meanwhile
/// (binding, mailbox, KeyPackages), then retries whatever the outbox still
/// holds.
async fn open(cli: &Cli) -> anyhow::Result<Client> {
    let mut c = Client::open(&config(cli)?).await?;
    if c.awaits_approval() {
        let client = c.client_id().unwrap_or_default().to_string();
        c.register(&client, None).await?;
        let stored = c.publish(DEFAULT_KEY_PACKAGES).await?;
        eprintln!("mlsc: {client} is approved: registered, {stored} KeyPackages published");
    }
    match c.renew_if_due().await {
        Ok(true) => eprintln!("mlsc: renewed the binding of {}", c.client_id().unwrap_or_default()),
        Ok(false) => {}
        Err(e) => eprintln!("mlsc: could not renew the binding: {e}"),
    }
    if c.client_id().is_some() {
        match c.flush_outbox().await {
            Ok(f) => report_earlier(&f.reports, None),
            Err(e) => eprintln!("mlsc: outbox: {e}"),
        }
    }
    Ok(c)
}

/// Like [`open`], but keeps trying to reach the cluster for up to `timeout`
/// (a send is expected to ride out a node restart).
async fn open_patiently(cli: &Cli, timeout: u64) -> anyhow::Result<Client> {
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        match open(cli).await {
            Ok(c) => return Ok(c),
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Prints what a receive brought: messages and files on stdout, the rest on
/// stderr; everything a member chose (group names, client ids, texts, file
/// names, reasons) escaped ([`shown`]), so that no member can forge a line
/// or drive the terminal.
fn print(events: &[Event]) {
    for e in events {
        match e {
            Event::Message { group, sender, text } => {
                println!("{} {}: {}", shown(group), shown(sender), shown(text))
            }
            Event::File { group, sender, path } => println!(
                "{} {}: file saved to {}",
                shown(group),
                shown(sender),
                shown(&path.display().to_string())
            ),
            Event::FileFailed { group, sender, name, reason } => println!(
                "{} {}: file {} could not be received: {}",
                shown(group),
                shown(sender),
                shown(name),
                shown(reason)
            ),
            Event::Joined { group } => eprintln!("joined {}", shown(group)),
            Event::Commit { group, epoch } => eprintln!("{} is at epoch {epoch}", shown(group)),
            Event::Removed { group } => eprintln!("removed from {}", shown(group)),
            Event::Unverified { group, member, reason } => {
                let group = shown(group);
                eprintln!(
                    "mlsc: {group}: {} is not vouched for by the AS ({}); \
                     sends to {group} are refused until it is removed",
                    shown(member),
                    shown(reason)
                )
            }
        }
    }
}

fn is_message(e: &Event) -> bool {
    matches!(e, Event::Message { .. } | Event::File { .. })
}

/// Says on stderr which members of group `name` our commits still owe a
/// copy to (their mailboxes are full): they have not joined, or are behind.
fn tell_owed(c: &Client, name: &str) -> anyhow::Result<()> {
    for (who, owes) in c.owed_in(name)? {
        let what = match owes {
            Owes::Welcome => "has not joined yet: its mailbox is full; its Welcome",
            Owes::Commit => "is behind: its mailbox is full; the commit",
        };
        eprintln!(
            "mlsc: {} {what} is sent again by every later mlsc command until it is stored",
            shown(&who)
        );
    }
    Ok(())
}

/// Tells the user what became of sends of earlier commands (not `this`).
fn report_earlier(reports: &[Report], this: Option<[u8; 32]>) {
    for r in reports.iter().filter(|r| Some(r.message_id) != this) {
        eprintln!("mlsc: an earlier message to {}: {}", r.group, r.outcome);
    }
}

/// Sends `req` through the outbox and says what became of it: nothing when
/// every copy is stored; which recipients were not served and why (exit 0:
/// the others have it); an error when it was refused, its outcome cannot be
/// known, or it is still waiting.
async fn send(c: &mut Client, req: mlsd_transport::Request, timeout: u64) -> anyhow::Result<()> {
    let id = outbox::message_id(&req);
    let reports = c.send_reliably(req, Duration::from_secs(timeout)).await?;
    report_earlier(&reports, id);
    match reports.into_iter().find(|r| Some(r.message_id) == id).map(|r| r.outcome) {
        Some(Outcome::Delivered { .. }) => Ok(()),
        Some(partly @ (Outcome::Partly { .. } | Outcome::Owed { .. })) => {
            eprintln!("mlsc: {partly}");
            Ok(())
        }
        Some(dropped @ Outcome::Dropped(_)) => anyhow::bail!("{dropped}"),
        Some(unknown @ Outcome::Unknown(_)) => anyhow::bail!("{unknown}"),
        None => anyhow::bail!(
            "not acknowledged within {timeout} s; it stays in the outbox and is retried by the next mlsc command"
        ),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `mlsc device ...`.
async fn device(c: Client, cmd: &DeviceCmd) -> anyhow::Result<()> {
    match cmd {
        DeviceCmd::List => {
            let (bindings, pending) = c.devices().await?;
            for b in bindings {
                let status = match b.revoked_at {
                    Some(_) => "revoked",
                    None if b.binding.expires_at <= now_secs() => "expired",
                    None => "live",
                };
                let me = if Some(b.binding.client.as_str()) == c.client_id() {
                    " (this device)"
                } else {
                    ""
                };
                println!(
                    "{} {status} fingerprint {}{me}",
                    shown(&b.binding.client),
                    fingerprint(&b.binding.signature_key)
                );
            }
            for p in pending {
                println!(
                    "{} awaits approval fingerprint {} (since {})",
                    shown(&p.client),
                    fingerprint(&p.signature_key),
                    p.requested_at
                );
            }
        }
        DeviceCmd::Approve { client, fingerprint: want } => {
            let (_, pending) = c.devices().await?;
            let Some(p) = pending.into_iter().find(|p| &p.client == client) else {
                anyhow::bail!("no registration of {client} awaits approval");
            };
            let got = fingerprint(&p.signature_key);
            if want.as_ref().is_some_and(|w| w != &got) {
                anyhow::bail!(
                    "{client} registered key fingerprint {got}, not the one given: not approved"
                );
            }
            c.approve(client, p.signature_key).await?;
            println!("approved {client} (key fingerprint {got})");
        }
        DeviceCmd::Revoke { client } => match c.revoke_device(client).await? {
            Revoked::Device(b) => println!("revoked {}", b.binding.client),
            Revoked::Declined => println!("declined the registration of {client}"),
        },
        DeviceCmd::Admit { client } => {
            let (code, expires_at) = c.admit(client).await?;
            println!(
                "approval code for {client}: {} (good once, until {expires_at}); on the new \
                 device: mlsc register {client} --code {}",
                code.as_str(),
                code.as_str()
            );
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.cmd {
        Cmd::Ping { role, key } => {
            let conn = Connection::connect(cli.server, &cli.ca).await?;
            let (node, rtt) = conn.ping(*role, key.as_bytes()).await?;
            println!("{node} {:.3} ms", rtt.as_secs_f64() * 1000.0);
        }
        Cmd::Register { client, token, code, count, push } => {
            let client =
                if client.contains('/') { client.clone() } else { format!("{client}/default") };
            let mut c = Client::open(&config(&cli)?).await?;
            if let Some(url) = push {
                c.set_push_url(url)?;
            }
            let token = match code {
                Some(code) => Some(normalize_code(code).to_string()),
                None => token.clone(),
            };
            let b = match c.register(&client, token).await {
                Err(e @ ClientError::AwaitsApproval { .. }) => {
                    // Not a failure: the next mlsc command completes it.
                    println!("{e}");
                    return Ok(());
                }
                other => other?,
            };
            let stored = c.publish(*count).await?;
            println!(
                "registered {} (serial {}, key {}), {stored} KeyPackages published",
                b.binding.client,
                b.binding.serial,
                hex::encode(&b.binding.signature_key[..8])
            );
        }
        Cmd::Publish { count } => {
            let mut c = open(&cli).await?;
            let stored = c.publish(*count).await?;
            println!("{stored} KeyPackages stored");
        }
        Cmd::Count => {
            let c = open(&cli).await?;
            let (n, lr) = c.count_key_packages().await?;
            println!("{n} one-time KeyPackages{}", if lr { " and a last-resort one" } else { "" });
        }
        Cmd::Lookup { identity } => {
            let c = open(&cli).await?;
            let bindings = c.lookup(identity).await?;
            if bindings.is_empty() {
                anyhow::bail!("no bindings for {identity}");
            }
            for (b, check) in bindings {
                let status = match check {
                    Ok(()) => "verified".to_string(),
                    Err(r) => format!("REJECTED: {r}"),
                };
                println!(
                    "{} key {} serial {} expires {} {status}",
                    b.binding.client,
                    hex::encode(&b.binding.signature_key[..8]),
                    b.binding.serial,
                    b.binding.expires_at
                );
            }
        }
        Cmd::Fetch { identity } => {
            let c = open(&cli).await?;
            let (ok, rejected) = c.fetch_key_packages(identity).await?;
            for kp in &ok {
                println!(
                    "{} verified{}",
                    kp.client,
                    if kp.last_resort { " (last resort)" } else { "" }
                );
            }
            for r in &rejected {
                println!("REJECTED: {r}");
            }
            if ok.is_empty() {
                anyhow::bail!("no verified KeyPackage for {identity}");
            }
        }
        Cmd::Revoke => {
            let mut c = open(&cli).await?;
            let b = c.revoke().await?;
            println!("revoked {}", b.binding.client);
        }
        Cmd::Device { cmd } => device(open(&cli).await?, cmd).await?,
        Cmd::Tickets => {
            let c = open(&cli).await?;
            for (kind, n) in c.ticket_counts()? {
                println!("{kind} {n}");
            }
        }
        Cmd::Mailbox { cmd } => {
            let mut c = open(&cli).await?;
            match cmd {
                MailboxCmd::Caps => {
                    let used = c.group_caps();
                    for (serial, token) in c.capabilities()? {
                        match used.get(&token) {
                            Some(group) => println!("{serial} group {}", shown(group)),
                            None => println!("{serial} unused (a KeyPackage not yet taken)"),
                        }
                    }
                }
                MailboxCmd::Revoke { serials } => {
                    let n = c.revoke_serials(serials).await?;
                    println!("revoked {n}");
                }
            }
        }
        Cmd::Group { cmd } => {
            let mut c = open(&cli).await?;
            match cmd {
                GroupCmd::Create { name, roster } => {
                    let mode = match roster {
                        Roster::Stored => RosterMode::Stored,
                        Roster::Client => RosterMode::Client,
                    };
                    c.create_group(name, mode).await?;
                    println!("created {name}");
                }
                GroupCmd::Add { name, identities } => {
                    let ids: Vec<&str> = identities.iter().map(String::as_str).collect();
                    let epoch = c.add_members(name, &ids).await?;
                    println!("added {} to {name} (epoch {epoch})", identities.join(", "));
                    tell_owed(&c, name)?;
                }
                GroupCmd::Remove { name, identities } => {
                    let ids: Vec<&str> = identities.iter().map(String::as_str).collect();
                    let epoch = c.remove_members(name, &ids).await?;
                    println!("removed {} from {name} (epoch {epoch})", identities.join(", "));
                    tell_owed(&c, name)?;
                }
                GroupCmd::List => {
                    for g in c.group_names() {
                        println!("{}", shown(&g));
                    }
                }
                GroupCmd::Members { name } => {
                    let _ = c.check_members(name).await;
                    let owed = c.owed_in(name)?;
                    for (m, status) in c.member_status(name)? {
                        let owes = owed.iter().find(|(w, _)| *w == m).map(|(_, o)| *o);
                        let m = shown(&m);
                        match owes {
                            Some(Owes::Welcome) => {
                                println!(
                                    "{m} NOT JOINED: its Welcome waits for room in its mailbox"
                                );
                                continue;
                            }
                            Some(Owes::Commit) => {
                                println!("{m} BEHIND: a commit waits for room in its mailbox");
                                continue;
                            }
                            None => {}
                        }
                        match status {
                            MemberStatus::Me | MemberStatus::Verified => println!("{m}"),
                            MemberStatus::Unverified(why) => {
                                println!("{m} UNVERIFIED: {}", shown(&why.to_string()))
                            }
                            MemberStatus::Unchecked => {
                                println!("{m} UNVERIFIED: not checked with the AS yet")
                            }
                        }
                    }
                }
                GroupCmd::Update { name } => {
                    let epoch = c.self_update(name).await?;
                    println!("updated {name} (epoch {epoch})");
                    tell_owed(&c, name)?;
                }
            }
        }
        Cmd::Send { name, text, timeout, allow_unverified } => {
            let mut c = open_patiently(&cli, *timeout).await?;
            c.allow_unverified(*allow_unverified);
            // Members not checked yet (the AS was unreachable) are checked
            // now; a failure leaves them unchecked, which prepare refuses.
            let _ = c.check_members(name).await;
            let req = c.prepare_text(name, text)?;
            send(&mut c, req, *timeout).await?;
        }
        Cmd::SendFile { name, path, timeout, allow_unverified } => {
            let mut c = open_patiently(&cli, *timeout).await?;
            c.allow_unverified(*allow_unverified);
            let req = c.prepare_file(name, path).await?;
            send(&mut c, req, *timeout).await?;
        }
        Cmd::Recv { wait } => {
            let mut c = open(&cli).await?;
            let events = c.receive().await?;
            print(&events);
            if *wait > 0 && !events.iter().any(is_message) {
                let (mut sub, backlog) = c.subscribe().await?;
                if backlog == 0 {
                    let _ = tokio::time::timeout(Duration::from_secs(*wait), sub.next()).await;
                }
                sub.close();
                print(&c.receive().await?);
            }
        }
        Cmd::Listen => {
            let mut c = open(&cli).await?;
            loop {
                print(&c.receive().await?);
                let (mut sub, _) = match c.subscribe().await {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("mlsc: {e}; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = c.reconnect().await;
                        continue;
                    }
                };
                print(&c.receive().await?);
                loop {
                    tokio::select! {
                        r = sub.next() => match r {
                            Ok(_) => print(&c.receive().await?),
                            Err(e) => {
                                eprintln!("mlsc: {e}; reconnecting");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                let _ = c.reconnect().await;
                                break;
                            }
                        },
                        _ = tokio::signal::ctrl_c() => return Ok(()),
                    }
                }
            }
        }
    }
    Ok(())
}
