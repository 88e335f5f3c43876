//! `mlsc`: the command-line client of mlsd.
//!
//! Every error is one line on stderr and a non-zero exit. Application
//! messages go to stdout as `GROUP SENDER: TEXT`; joins, commits and removals
//! are reported on stderr so scripts can read stdout alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use mlsd_client::devices::Revoked;
use mlsd_client::group::Event;
use mlsd_client::members::MemberStatus;
use mlsd_client::outbox::{self, Outcome, Report};
use mlsd_client::{Client, ClientConfig, ClientError, Connection};
use mlsd_transport::protocol::r#as::fingerprint;
use mlsd_transport::protocol::RosterMode;
use mlsd_transport::Role;

/// mlsc: talk to an mlsd cluster.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Directory holding this device's identity and MLS state (default: ~/.mlsc).
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    /// Any node of the cluster.
    #[arg(long, env = "MLSC_SERVER", default_value = "127.0.0.1:4433", global = true)]
    server: SocketAddr,
    /// The cluster CA certificate that the node must chain to.
    #[arg(long, default_value = "data/certs/ca.pem", global = true)]
    ca: PathBuf,
    /// The AS public key that bindings must be signed with.
    #[arg(long, default_value = "data/certs/as.pub", global = true)]
    as_key: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Roster {
    /// The IDS keeps the roster, encrypted under a key each send carries.
    Stored,
    /// Every send carries the roster; the IDS keeps none.
    Client,
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Show this identity's devices and the registrations awaiting approval.
    List,
    /// Approve the pending registration of CLIENT, a new device of this identity.
    Approve {
        /// e.g. alice/laptop
        client: String,
        /// Approve only if the new device's key has this fingerprint (as its `mlsc register` printed).
        #[arg(long)]
        fingerprint: Option<String>,
    },
    /// Revoke CLIENT, another device of this identity (or decline its pending registration).
    Revoke {
        /// e.g. alice/phone
        client: String,
    },
}

#[derive(Subcommand)]
enum MailboxCmd {
    /// The delivery capabilities this device issued: serial and whether a group uses it.
    Caps,
    /// Revoke capabilities by serial (as `caps` lists them; 0 is the legacy one):
    /// copies through them are refused from now on.
    Revoke {
        /// Serials to revoke.
        #[arg(required = true)]
        serials: Vec<u64>,
    },
}

#[derive(Subcommand)]
enum GroupCmd {
    /// Create a group with you as its only member.
    Create {
        /// Local name of the group (members joining later read it from the SDS).
        name: String,
        /// Where the IDS gets the recipients from.
        #[arg(long, value_enum, default_value = "stored")]
        roster: Roster,
    },
    /// Add every device of each IDENTITY (KeyPackages fetched and verified) in one commit.
    Add {
        /// The group.
        name: String,
        /// Identities to add.
        #[arg(required = true)]
        identities: Vec<String>,
    },
    /// Remove every device of each IDENTITY in one commit.
    Remove {
        /// The group.
        name: String,
        /// Identities to remove.
        #[arg(required = true)]
        identities: Vec<String>,
    },
    /// List your groups.
    List,
    /// List a group's members.
    Members {
        /// The group.
        name: String,
    },
    /// Update your own leaf (fresh keys) in one commit.
    Update {
        /// The group.
        name: String,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Ask the actor of ROLE that owns KEY to answer; prints the node that answered and the round-trip time.
    Ping {
        /// One of as, cs, ids, ods, sds.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Shard key (identity, group id, a mailbox's shard hint: the first two bytes of its id, or blob id); picks the owner node.
        #[arg(long, default_value = "")]
        key: String,
    },
    /// Steps 1-2: bind IDENTITY[/DEVICE] to a new signature key at the AS, open a mailbox, publish KeyPackages.
    Register {
        /// `alice` or `alice/phone` (device defaults to "default"); lowercase letters, digits, . _ -
        client: String,
        /// Enrollment token from `mlsd admin enroll`, when the AS requires one.
        #[arg(long)]
        token: Option<String>,
        /// One-time KeyPackages to publish (plus one last-resort KeyPackage).
        #[arg(long, default_value_t = DEFAULT_KEY_PACKAGES)]
        count: u32,
        /// UnifiedPush endpoint (http:// URL) to notify when this device is offline.
        #[arg(long)]
        push: Option<String>,
    },
    /// Step 2: publish more KeyPackages (plus a new last-resort one).
    Publish {
        /// One-time KeyPackages to publish.
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// Show how many one-time KeyPackages the CS holds for this device.
    Count,
    /// Step 4: show IDENTITY's bindings at the AS and whether each verifies.
    Lookup {
        /// The identity, e.g. bob.
        identity: String,
    },
    /// Steps 3-4: take one KeyPackage per device of IDENTITY from the CS and authenticate each.
    Fetch {
        /// The identity, e.g. bob.
        identity: String,
    },
    /// Revoke this device's binding at the AS.
    Revoke,
    /// The quota tickets this device holds, per kind (fetch, mailbox, group, blob).
    Tickets,
    /// This identity's devices: list them, approve a new one, revoke one.
    Device {
        #[command(subcommand)]
        cmd: DeviceCmd,
    },
    /// This device's mailbox: its delivery capabilities, and revoking one a spammer uses.
    Mailbox {
        #[command(subcommand)]
        cmd: MailboxCmd,
    },
    /// Groups: create, add, remove, list, members, update.
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Steps 5-7: send TEXT to group NAME; retried (same message id) until acknowledged.
    Send {
        /// The group.
        name: String,
        /// The message.
        text: String,
        /// Give up after this many seconds (the message stays in the outbox).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Send even if the group has members the AS does not vouch for.
        #[arg(long)]
        allow_unverified: bool,
    },
    /// Encrypt PATH, upload it to the SDS and send its reference to group NAME.
    SendFile {
        /// The group.
        name: String,
        /// The file.
        path: PathBuf,
        /// Give up after this many seconds (the message stays in the outbox).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Send even if the group has members the AS does not vouch for.
        #[arg(long)]
        allow_unverified: bool,
    },
    /// Process everything waiting (Welcomes, commits, messages) and print the messages.
    Recv {
        /// If nothing is waiting, wait up to this many seconds for something.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Like recv, live, until interrupted.
    Listen,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::from_name(s).ok_or_else(|| format!("unknown role {s:?} (as, cs, ids, ods, sds)"))
}

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

fn print(events: &[Event]) {
    for e in events {
        match e {
            Event::Message { group, sender, text } => println!("{group} {sender}: {text}"),
            Event::File { group, sender, path } => {
                println!("{group} {sender}: file saved to {}", path.display())
            }
            Event::FileFailed { group, sender, name, reason } => {
                println!("{group} {sender}: file {name} could not be received: {reason}")
            }
            Event::Joined { group } => eprintln!("joined {group}"),
            Event::Commit { group, epoch } => eprintln!("{group} is at epoch {epoch}"),
            Event::Removed { group } => eprintln!("removed from {group}"),
            Event::Unverified { group, member, reason } => eprintln!(
                "mlsc: {group}: {member} is not vouched for by the AS ({reason}); \
                 sends to {group} are refused until it is removed"
            ),
        }
    }
}

fn is_message(e: &Event) -> bool {
    matches!(e, Event::Message { .. } | Event::File { .. })
}

/// Tells the user what became of sends of earlier commands (not `this`).
fn report_earlier(reports: &[Report], this: Option<[u8; 32]>) {
    for r in reports.iter().filter(|r| Some(r.message_id) != this) {
        eprintln!("mlsc: an earlier message to {}: {}", r.group, r.outcome);
    }
}

/// Sends `req` through the outbox and says what became of it: nothing when
/// every copy is stored; which recipients were not served and why (exit 0:
/// the others have it); an error when it was refused or is still waiting.
async fn send(c: &mut Client, req: mlsd_transport::Request, timeout: u64) -> anyhow::Result<()> {
    let id = outbox::message_id(&req);
    let reports = c.send_reliably(req, Duration::from_secs(timeout)).await?;
    report_earlier(&reports, id);
    match reports.into_iter().find(|r| Some(r.message_id) == id).map(|r| r.outcome) {
        Some(Outcome::Delivered { .. }) => Ok(()),
        Some(partly @ Outcome::Partly { .. }) => {
            eprintln!("mlsc: {partly}");
            Ok(())
        }
        Some(dropped @ Outcome::Dropped(_)) => anyhow::bail!("{dropped}"),
        None => anyhow::bail!(
            "not acknowledged within {timeout} s; it stays in the outbox and is retried by the next mlsc command"
        ),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One-time KeyPackages a registration publishes unless told otherwise.
const DEFAULT_KEY_PACKAGES: u32 = 10;

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
                    b.binding.client,
                    fingerprint(&b.binding.signature_key)
                );
            }
            for p in pending {
                println!(
                    "{} awaits approval fingerprint {} (since {})",
                    p.client,
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
        Cmd::Register { client, token, count, push } => {
            let client =
                if client.contains('/') { client.clone() } else { format!("{client}/default") };
            let mut c = Client::open(&config(&cli)?).await?;
            if let Some(url) = push {
                c.set_push_url(url)?;
            }
            let b = match c.register(&client, token.clone()).await {
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
                            Some(group) => println!("{serial} group {group}"),
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
                }
                GroupCmd::Remove { name, identities } => {
                    let ids: Vec<&str> = identities.iter().map(String::as_str).collect();
                    let epoch = c.remove_members(name, &ids).await?;
                    println!("removed {} from {name} (epoch {epoch})", identities.join(", "));
                }
                GroupCmd::List => {
                    for g in c.group_names() {
                        println!("{g}");
                    }
                }
                GroupCmd::Members { name } => {
                    let _ = c.check_members(name).await;
                    for (m, status) in c.member_status(name)? {
                        match status {
                            MemberStatus::Me | MemberStatus::Verified => println!("{m}"),
                            MemberStatus::Unverified(why) => println!("{m} UNVERIFIED: {why}"),
                            MemberStatus::Unchecked => {
                                println!("{m} UNVERIFIED: not checked with the AS yet")
                            }
                        }
                    }
                }
                GroupCmd::Update { name } => {
                    let epoch = c.self_update(name).await?;
                    println!("updated {name} (epoch {epoch})");
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
