//! The IDS's logic as its shells run it: one [`GroupLogic`] per group (the
//! group actor is its serializer), deciding creations, sends, collections
//! and what to keep when a fan-out ends, and the sweep that picks idle
//! groups ([`idle_groups`]). Time comes from the context, never the clock;
//! every write is returned, never made: the shell commits it to the shard
//! and then carries out the fan-out the decision names
//! ([`Effect::FanOut`]).

use mlsd_transport::protocol::{IdsRequest, IdsResponse, RosterMode, SealedRoster, SendBody};
use mlsd_transport::{Request, Response, Role, WireError};

use super::group::{day_of, parse_idle_key, Accepted, GroupCore, IDLE_INDEX};
use super::kept;
use super::plan::KeptSend;
use crate::budget::{seconds, Budget};
use crate::contract::{internal, not_mine, pong, Decision, Effect, RoleContext, RoleLogic};
use crate::storage::{Batch, Space, View};

const SPACE: Space = Space::Role(Role::Ids);

/// One group's logic: its state machine ([`GroupCore`]) and the copies per
/// second it may still make.
pub struct GroupLogic {
    core: GroupCore,
    budget: Budget,
}

/// What a collection found ([`GroupLogic::collect`]).
pub enum Collected {
    /// Idle past the cutoff: these writes delete the group; the core has
    /// forgotten it.
    Gone(Batch),
    /// The index entry is stale (the group is gone or was active since):
    /// these writes remove the entry.
    StaleEntry(Batch),
    /// Active: nothing to do.
    Active,
}

impl GroupLogic {
    /// Group `group` as `ctx.store` holds it, with a full budget of
    /// `copies_per_second` as of `ctx.now`.
    pub fn load(
        group: &[u8],
        copies_per_second: u32,
        ctx: &RoleContext<'_>,
    ) -> Result<Self, WireError> {
        let core = GroupCore::load(group, ctx.store)?;
        Ok(GroupLogic { core, budget: Budget::per_second(copies_per_second, seconds(ctx.now)) })
    }

    /// The group id.
    pub fn group(&self) -> &[u8] {
        self.core.group()
    }

    /// `CreateGroup`, noting the day's activity.
    fn create(
        &mut self,
        mode: RosterMode,
        auth_key: [u8; 32],
        roster: Option<SealedRoster>,
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let mut writes = self.core.create(mode, auth_key, roster)?;
        self.core.touch(day_of(ctx.now), &mut writes);
        Ok(Decision::write(Response::Ids(IdsResponse::GroupCreated), writes))
    }

    /// `Send`: the group's budget admits it (a refused send changes
    /// nothing), the core accepts it, the day's activity is noted with the
    /// acceptance, and the budget is charged its copies. The decision's
    /// effect is the fan-out, which answers the sender; `response` is what
    /// it answers when every copy is stored.
    fn send(
        &mut self,
        body: &SendBody,
        mac: &[u8; 32],
        ctx: &RoleContext<'_>,
    ) -> Result<Decision, WireError> {
        let now = seconds(ctx.now);
        self.budget.admit(now)?;
        let Accepted { fanout, mut writes } =
            self.core.accept_send(body, mac, ctx.store, ctx.now)?;
        self.core.touch(day_of(ctx.now), &mut writes);
        let copies = fanout.plan.copies();
        self.budget.charge(copies, now);
        let response =
            Response::Ids(IdsResponse::Sent { copies: u32::try_from(copies).unwrap_or(u32::MAX) });
        Ok(Decision { response, writes, effects: vec![Effect::FanOut(Box::new(fanout))] })
    }

    /// Deletes the group if it was last active on or before day `cutoff`
    /// (the sweep found its idle-index entry under `day`); the shell asks
    /// only while no fan-out of the group runs.
    pub fn collect(
        &mut self,
        day: u32,
        cutoff: u32,
        store: &dyn View,
    ) -> Result<Collected, WireError> {
        if let Some(writes) = self.core.collect(cutoff, store)? {
            return Ok(Collected::Gone(writes));
        }
        Ok(self.core.stale_index_entry(day).map_or(Collected::Active, Collected::StaleEntry))
    }

    /// What to write when the fan-out of send `message_id` ends: a complete fan-out of
    /// a kept send forgets it; one that left copies missing (or died) is
    /// kept, so its retry completes however many commits come first
    /// ([`kept`]). `false` with the writes when there was no room to keep it.
    pub fn fanout_ended(
        &self,
        message_id: &[u8; 32],
        keep: &KeptSend,
        from_kept: bool,
        complete: bool,
        store: &dyn View,
    ) -> Result<(Batch, bool), WireError> {
        let group = self.core.group();
        match (complete, from_kept) {
            (true, true) => Ok((kept::forget(group, message_id), true)),
            (true, false) => Ok((Batch::new(), true)),
            (false, _) => kept::keep(store, group, message_id, keep),
        }
    }
}

impl RoleLogic for GroupLogic {
    fn role(&self) -> Role {
        Role::Ids
    }

    /// This group's `CreateGroup` and `Send`, and `Ping`; anything else
    /// (another group's request included) is a host defect.
    fn handle(&mut self, req: Request, _pre: Option<Response>, ctx: &RoleContext<'_>) -> Decision {
        match req {
            Request::Ids(IdsRequest::CreateGroup { group, mode, auth_key, roster })
                if group == self.group() =>
            {
                self.create(mode, auth_key, roster, ctx).into()
            }
            Request::Ids(IdsRequest::Send { body, mac }) if body.group == self.group() => {
                self.send(&body, &mac, ctx).into()
            }
            Request::Ping(_) => Decision::reply(pong(Role::Ids, ctx)),
            other => not_mine(Role::Ids, &other),
        }
    }
}

/// The group an IDS request is for.
pub fn group_of(request: &IdsRequest) -> &[u8] {
    match request {
        IdsRequest::CreateGroup { group, .. } => group,
        IdsRequest::Send { body, .. } => &body.group,
    }
}

/// A group the sweep found idle past the cutoff, by its idle-index entry.
pub struct IdleGroup {
    /// The day it was last active.
    pub day: u32,
    /// The group id.
    pub group: Vec<u8>,
    /// Its idle-index entry: forgotten ([`forget_idle_entry`]) if the group
    /// cannot be loaded to collect it.
    pub entry: Vec<u8>,
    /// The last day of activity that counts as idle.
    pub cutoff: u32,
}

/// The groups at the head of the idle index (at most `limit` entries read)
/// that have been idle more than `idle_days` at `ctx.now`: each is told to
/// collect itself by its own group actor, the one writer of its group.
pub fn idle_groups(
    ctx: &RoleContext<'_>,
    idle_days: u32,
    limit: usize,
) -> Result<Vec<IdleGroup>, WireError> {
    let Some(cutoff) = day_of(ctx.now).checked_sub(idle_days) else { return Ok(Vec::new()) };
    let mut idle = Vec::new();
    for (entry, _) in ctx.store.scan_prefix(SPACE, IDLE_INDEX, limit).map_err(internal)? {
        let Some((day, group)) = parse_idle_key(&entry) else { continue };
        if day > cutoff {
            break;
        }
        idle.push(IdleGroup { day, group, entry, cutoff });
    }
    Ok(idle)
}

/// The write that drops an idle-index entry whose group cannot be loaded:
/// left as it is, but no longer a candidate.
pub fn forget_idle_entry(entry: Vec<u8>) -> Batch {
    let mut b = Batch::new();
    b.delete(SPACE, entry);
    b
}
