//! A fan-out's bookkeeping, apart from its actors: when sealed copies leave
//! for the ODS owners, what came back, and what the sender is told. The
//! fan-out actor ([`super::fanout`]) feeds it sealed copies and results and
//! does what it decides; tests drive it directly.

use mlsd_transport::protocol::ids::MAX_UNDELIVERED_LISTED;
use mlsd_transport::protocol::{
    DeliveryCap, EnqueueItem, EnqueueResult, IdsResponse, Undeliverable, Undelivered,
};
use mlsd_transport::Response;

/// Most sealed copies handed to the ODS in one chunk: large enough that a
/// synced write carries many copies, small enough that the rest of the
/// fan-out overlaps it.
pub const ENQUEUE_CHUNK: usize = 256;

/// Fewest sealed copies handed over while nothing is in flight: enough that
/// the synced write's fixed cost is shared, few enough that the ODS starts
/// well before the first full chunk is sealed.
pub const ENQUEUE_FIRST: usize = 32;

/// Copies sealed, on their way to the ODS, and their outcomes.
#[derive(Default)]
pub struct Tally {
    /// Sealed copies not yet handed to the ODS.
    ready: Vec<EnqueueItem>,
    /// Chunks handed over whose results have not come back.
    in_flight: usize,
    /// Copies the ODS owners reported stored.
    stored: u32,
    /// Copies not stored, with why (the first `MAX_UNDELIVERED_LISTED`).
    undelivered: Vec<Undelivered>,
    /// Copies not stored, all of them.
    failed: u32,
}

impl Tally {
    /// A sealed copy, ready to leave.
    pub fn sealed(&mut self, item: EnqueueItem) {
        self.ready.push(item);
    }

    /// A copy that will not be stored, and why.
    pub fn not_stored(&mut self, cap: DeliveryCap, reason: Undeliverable) {
        self.failed += 1;
        if self.undelivered.len() < MAX_UNDELIVERED_LISTED {
            self.undelivered.push(Undelivered { cap, reason });
        }
    }

    /// The sealed copies to hand over now, if it is time: when nothing is in
    /// flight and at least [`ENQUEUE_FIRST`] are ready (the ODS starts
    /// early), when a full [`ENQUEUE_CHUNK`] is ready, or when nothing more
    /// will be sealed (`all_sealed`). The chunk counts as in flight until
    /// [`Tally::enqueued`].
    pub fn take_chunk(&mut self, all_sealed: bool) -> Option<Vec<EnqueueItem>> {
        let n = self.ready.len();
        let idle = self.in_flight == 0 && n >= ENQUEUE_FIRST;
        if n == 0 || !(idle || n >= ENQUEUE_CHUNK || all_sealed) {
            return None;
        }
        self.in_flight += 1;
        Some(std::mem::take(&mut self.ready))
    }

    /// The results of one chunk, in the order of its `caps`; a missing
    /// result (the chunk's task failed) counts as unavailable.
    pub fn enqueued(&mut self, caps: Vec<DeliveryCap>, results: Vec<EnqueueResult>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        for (i, cap) in caps.into_iter().enumerate() {
            let reason = match results.get(i) {
                Some(EnqueueResult::Stored { .. }) => {
                    self.stored += 1;
                    continue;
                }
                Some(EnqueueResult::UnknownMailbox) => Undeliverable::UnknownMailbox,
                Some(EnqueueResult::MailboxFull) => Undeliverable::MailboxFull,
                Some(EnqueueResult::TooLarge) => Undeliverable::TooLarge,
                Some(EnqueueResult::NoCapability) => Undeliverable::NoCapability,
                // No leader found for the copy in the entry node's time, or no answer.
                Some(EnqueueResult::NotOwner | EnqueueResult::NotLeader { .. }) | None => {
                    Undeliverable::Unavailable
                }
            };
            self.not_stored(cap, reason);
        }
    }

    /// The sender's answer once every copy is sealed (`all_sealed`) and back
    /// from the ODS, with whether a retry could store more; `None` before.
    pub fn answer(&mut self, all_sealed: bool) -> Option<(Response, bool)> {
        if !all_sealed || self.in_flight > 0 || !self.ready.is_empty() {
            return None;
        }
        // Judged before the list moves into the answer.
        let retryable = self.undelivered.iter().any(|u| u.reason.retryable())
            || self.failed as usize > self.undelivered.len();
        let copies = self.stored + self.failed;
        let response = if self.failed == 0 {
            Response::Ids(IdsResponse::Sent { copies })
        } else {
            Response::Ids(IdsResponse::PartlySent {
                copies,
                failed: self.failed,
                undelivered: std::mem::take(&mut self.undelivered),
            })
        };
        Some((response, retryable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: u32) -> EnqueueItem {
        let mut token = [0; 32];
        token[..4].copy_from_slice(&i.to_be_bytes());
        let cap = DeliveryCap { shard: [0; 2], token };
        EnqueueItem { cap, delivery_id: token, envelope: vec![1] }
    }

    fn caps(chunk: &[EnqueueItem]) -> Vec<DeliveryCap> {
        chunk.iter().map(|i| i.cap.clone()).collect()
    }

    #[test]
    fn copies_leave_early_then_in_full_chunks_then_the_rest() {
        let mut t = Tally::default();
        for i in 0..ENQUEUE_FIRST as u32 - 1 {
            t.sealed(item(i));
        }
        assert!(t.take_chunk(false).is_none(), "too few to start");
        t.sealed(item(999));
        let first = t.take_chunk(false).expect("enough to start while idle");
        assert_eq!(first.len(), ENQUEUE_FIRST);
        // While that chunk is in flight, copies gather up to a full chunk.
        for i in 0..ENQUEUE_CHUNK as u32 - 1 {
            t.sealed(item(1000 + i));
        }
        assert!(t.take_chunk(false).is_none(), "waits for the chunk in flight");
        t.sealed(item(5000));
        assert_eq!(t.take_chunk(false).map(|c| c.len()), Some(ENQUEUE_CHUNK));
        // The last few leave when nothing more will be sealed.
        t.sealed(item(6000));
        assert!(t.take_chunk(false).is_none());
        assert_eq!(t.take_chunk(true).map(|c| c.len()), Some(1));
    }

    #[test]
    fn the_sender_hears_only_when_everything_is_back() {
        let mut t = Tally::default();
        t.sealed(item(1));
        t.sealed(item(2));
        let chunk = t.take_chunk(true).unwrap();
        assert!(t.answer(true).is_none(), "a chunk is still in flight");
        t.enqueued(caps(&chunk), vec![EnqueueResult::Stored { seq: 1 }; 2]);
        assert_eq!(t.answer(true), Some((Response::Ids(IdsResponse::Sent { copies: 2 }), false)));
    }

    #[test]
    fn missing_copies_are_named_and_judged_retryable_or_not() {
        let mut t = Tally::default();
        for i in 0..4 {
            t.sealed(item(i));
        }
        let chunk = t.take_chunk(true).unwrap();
        let m = caps(&chunk);
        // A short result list: the copy without a result counts as unavailable.
        t.enqueued(
            m.clone(),
            vec![
                EnqueueResult::Stored { seq: 1 },
                EnqueueResult::UnknownMailbox,
                EnqueueResult::TooLarge,
            ],
        );
        let (r, retryable) = t.answer(true).unwrap();
        assert!(retryable, "an unavailable owner may come back");
        let Response::Ids(IdsResponse::PartlySent { copies, failed, undelivered }) = r else {
            panic!("{r:?}")
        };
        assert_eq!((copies, failed), (4, 3));
        let reasons: Vec<_> = undelivered.iter().map(|u| (u.cap.clone(), u.reason)).collect();
        assert_eq!(
            reasons,
            [
                (m[1].clone(), Undeliverable::UnknownMailbox),
                (m[2].clone(), Undeliverable::TooLarge),
                (m[3].clone(), Undeliverable::Unavailable)
            ]
        );
        // Only permanent reasons: nothing a retry could add.
        let mut t = Tally::default();
        t.sealed(item(1));
        let chunk = t.take_chunk(true).unwrap();
        t.enqueued(caps(&chunk), vec![EnqueueResult::UnknownMailbox]);
        assert!(!t.answer(true).unwrap().1);
    }

    #[test]
    fn the_list_of_missing_copies_is_bounded_but_the_count_is_not() {
        let mut t = Tally::default();
        let n = MAX_UNDELIVERED_LISTED as u32 + 10;
        for i in 0..n {
            t.not_stored(item(i).cap.clone(), Undeliverable::UnknownMailbox);
        }
        let (r, retryable) = t.answer(true).unwrap();
        let Response::Ids(IdsResponse::PartlySent { failed, undelivered, .. }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(failed, n);
        assert_eq!(undelivered.len(), MAX_UNDELIVERED_LISTED);
        assert!(retryable, "unnamed copies are not known to be permanent");
    }
}
