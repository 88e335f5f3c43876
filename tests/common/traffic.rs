//! Group traffic for the elastic-cluster tests: several groups of real
//! clients (stored rosters), one message per group per round from each
//! member in turn, each retried within the client's patience; at the end
//! every member must have read every message of its group it did not send,
//! exactly once and in the order sent.

use std::time::{Duration, Instant};

use mlsd_client::Client;
use mlsd_transport::protocol::RosterMode;

use super::{sent_within_patience, texts};

/// A group's name, its members (identity, client), and the messages sent
/// to it (index of the sender, text), in order.
type Group = (String, Vec<(String, Client)>, Vec<(usize, String)>);

/// The groups, their members and what was sent to each.
pub struct Traffic {
    groups: Vec<Group>,
    rounds: usize,
}

impl Traffic {
    /// Groups of `sizes` members made of `members` (identity, client), in
    /// order: the first of each creates the group and adds the others,
    /// who read their Welcome.
    pub async fn new(sizes: &[usize], mut members: Vec<(String, Client)>) -> Traffic {
        assert!(sizes.iter().sum::<usize>() <= members.len(), "not enough members");
        let mut groups = Vec::new();
        for (g, size) in sizes.iter().enumerate() {
            let mut group: Vec<(String, Client)> = members.drain(..*size).collect();
            let name = format!("T{g}");
            let others: Vec<String> = group[1..].iter().map(|(id, _)| id.clone()).collect();
            let others: Vec<&str> = others.iter().map(String::as_str).collect();
            let creator = &mut group[0].1;
            creator.create_group(&name, RosterMode::Stored).await.unwrap();
            creator.add_members(&name, &others).await.unwrap();
            for (_, c) in group.iter_mut().skip(1) {
                c.receive().await.unwrap();
            }
            groups.push((name, group, Vec::new()));
        }
        Traffic { groups, rounds: 0 }
    }

    /// One message in each group, from its next member in turn.
    pub async fn round(&mut self) {
        for (name, members, sent) in self.groups.iter_mut() {
            let from = self.rounds % members.len();
            let text = format!("{name} round {} from {}", self.rounds, members[from].0);
            sent_within_patience(&mut members[from].1, name, &text).await;
            sent.push((from, text));
        }
        self.rounds += 1;
    }

    /// How many messages were sent in all.
    pub fn sent(&self) -> usize {
        self.groups.iter().map(|(_, _, s)| s.len()).sum()
    }

    /// Every member reads until it has every message of its group it did
    /// not send (or 30 s passed), and must have read each exactly once, in
    /// the order sent.
    pub async fn all_read_once(&mut self) {
        for (name, members, sent) in self.groups.iter_mut() {
            for (i, (id, c)) in members.iter_mut().enumerate() {
                let want: Vec<String> =
                    sent.iter().filter(|(from, _)| *from != i).map(|(_, t)| t.clone()).collect();
                let mut got = Vec::new();
                let read_by = Instant::now() + Duration::from_secs(30);
                while got.len() < want.len() && Instant::now() < read_by {
                    match c.receive().await {
                        Ok(events) => got.extend(texts(&events)),
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                assert_eq!(got, want, "{id} in {name}: every message, once, in order");
            }
        }
    }
}
