//! Receiving: fetching the mailbox, opening envelopes by trial decryption,
//! processing Welcomes, commits and messages in order, and keeping envelopes
//! that no key opens yet until one does.

use super::*;

/// How long a kept envelope waits for a key: longer than any sender retries
/// or a commit's copy can be delayed; one that no key opened by then was
/// never for a group we are in.
const DEFERRED_SECS: u64 = 14 * 24 * 3600;

/// Most such envelopes kept. They are acknowledged at the ODS, so they are
/// never evicted to make room: when this many wait, `receive` stops before
/// the next envelope that would have to wait too, leaving it (and what
/// follows) at the ODS until keys arrive or old ones expire.
const MAX_DEFERRED: usize = 4096;

/// The older form of [`DEFERRED`] (envelopes only), read once and converted.
const OLD_DEFERRED: &str = "deferred_envelopes";

/// Home file of envelopes that no key of ours opened yet (see `receive`),
/// each with the Unix time it was first kept.
const DEFERRED: &str = "deferred.v2";

/// Home file of capabilities of groups we were removed from, each with the
/// Unix time from which it is revoked (see [`REVOKE_AFTER_REMOVAL_SECS`]).
const REVOKE_OWED: &str = "revoke_owed";

/// How long the capability of a group we were removed from stays live:
/// longer than a send from before the removal may still be retried (the
/// IDS keeps such sends and the ODS recognizes their copies for one to two
/// weeks), so a message sent while we were a member still reaches us, and
/// no retry of it turns into a permanent partial delivery for its sender.
const REVOKE_AFTER_REMOVAL_SECS: u64 = 15 * 24 * 3600;

/// Most capabilities waiting in [`REVOKE_OWED`] or [`ISSUE_OWED`]; the
/// oldest go first.
const MAX_OWED: usize = 4096;

/// Home file of capabilities of groups we created that the ODS has not
/// confirmed issuing yet.
const ISSUE_OWED: &str = "issue_owed";

impl Client {
    /// Appends `item` to the owed list in home file `name`, keeping the
    /// newest [`MAX_OWED`].
    fn owe<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        name: &str,
        item: T,
    ) -> Result<(), ClientError> {
        let mut owed: Vec<T> = self.home.load(name)?.unwrap_or_default();
        owed.push(item);
        let excess = owed.len().saturating_sub(MAX_OWED);
        owed.drain(..excess);
        self.home.save(name, &owed)
    }

    /// Notes the capability `token` of a group we were removed from, to be
    /// revoked [`REVOKE_AFTER_REMOVAL_SECS`] from now.
    fn owe_revoke(&self, token: [u8; 32]) -> Result<(), ClientError> {
        self.owe(REVOKE_OWED, (now_secs() + REVOKE_AFTER_REMOVAL_SECS, token))
    }

    /// Revokes the capabilities of groups we were removed from whose time
    /// has come; a failure keeps them for the next `receive`.
    async fn revoke_owed(&mut self) -> Result<(), ClientError> {
        let owed: Vec<(u64, [u8; 32])> = self.home.load(REVOKE_OWED)?.unwrap_or_default();
        let now = now_secs();
        let due: Vec<[u8; 32]> = owed.iter().filter(|(t, _)| *t <= now).map(|(_, c)| *c).collect();
        if due.is_empty() {
            return Ok(());
        }
        match self.revoke_caps(&due).await {
            Ok(_) => {
                let rest: Vec<(u64, [u8; 32])> =
                    owed.into_iter().filter(|(_, c)| !due.contains(c)).collect();
                self.home.save(REVOKE_OWED, &rest)
            }
            Err(e) => {
                tracing::warn!(error = %e, "revoking a left group's capability; will retry");
                Ok(())
            }
        }
    }

    /// Notes `cap` as a capability still to issue (see [`ISSUE_OWED`]).
    pub(super) fn owe_issue(
        &self,
        cap: mlsd_transport::protocol::DeliveryCap,
    ) -> Result<(), ClientError> {
        self.owe(ISSUE_OWED, cap)
    }

    /// Issues the capabilities still owed; a failure keeps them for the
    /// next `receive`.
    async fn issue_owed(&mut self) -> Result<(), ClientError> {
        let owed: Vec<mlsd_transport::protocol::DeliveryCap> =
            self.home.load(ISSUE_OWED)?.unwrap_or_default();
        if owed.is_empty() {
            return Ok(());
        }
        match self.issue_caps(&owed).await {
            Ok(()) => {
                self.home.save(ISSUE_OWED, &Vec::<mlsd_transport::protocol::DeliveryCap>::new())
            }
            Err(e) => {
                tracing::warn!(error = %e, "issuing a created group's capability; will retry");
                Ok(())
            }
        }
    }

    /// Subscribes to this device's mailbox from its last acknowledged envelope.
    pub async fn subscribe(
        &mut self,
    ) -> Result<(crate::mailbox::Subscription, usize), ClientError> {
        let keys = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?;
        let (sub, backlog) =
            crate::mailbox::subscribe(&self.conn, keys, &mut self.counter, keys.acked).await?;
        Ok((sub, backlog.len()))
    }

    /// Fetches everything waiting in the mailbox, processes it in order
    /// (Welcomes, commits, messages) and acknowledges it.
    pub async fn receive(&mut self) -> Result<Vec<Event>, ClientError> {
        self.settle_all().await?;
        self.issue_owed().await?;
        self.revoke_owed().await?;
        let mut events = std::mem::take(&mut self.pending_events);
        let mut deferred = self.load_deferred()?;
        let mut tried_with = None;
        loop {
            let keys = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?;
            let after = keys.acked;
            let batch = match crate::mailbox::fetch(&self.conn, keys, &mut self.counter, after, 256)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    // What was processed stays; the next receive returns it.
                    self.pending_events = events;
                    return Err(e);
                }
            };
            if batch.is_empty() {
                break;
            }
            let mut last = after;
            let mut followups = Vec::new();
            let mut full = false;
            for d in batch {
                // An envelope that does not open or process (not for us any
                // more, or malformed) is skipped; it must not block the rest.
                match self.open_and_process(&d.envelope, &mut followups) {
                    Ok(Some(ev)) => events.extend(ev),
                    // No key of ours opens it yet: perhaps a message of an
                    // epoch whose commit reaches us later (its copy to us was
                    // delayed). Kept, and tried again as keys arrive; if no
                    // room is left it stays unacknowledged at the ODS.
                    Ok(None) if deferred.len() >= MAX_DEFERRED => {
                        full = true;
                        break;
                    }
                    Ok(None) => deferred.push((now_secs(), d.envelope)),
                    Err(_) => {}
                }
                last = d.seq;
            }
            // Retry what did not open whenever our keys changed since the last
            // try (a commit or Welcome processed above, or a settled commit of
            // ours, gives a new epoch's key); no trial decryption otherwise.
            while !deferred.is_empty() && tried_with != Some(self.key_fingerprint()) {
                tried_with = Some(self.key_fingerprint());
                let mut still = Vec::new();
                for (since, env) in std::mem::take(&mut deferred) {
                    match self.open_and_process(&env, &mut followups) {
                        Ok(Some(ev)) => events.extend(ev),
                        Ok(None) => still.push((since, env)),
                        Err(_) => {}
                    }
                }
                deferred = still;
            }
            // MLS state and our position are durable before anything else can
            // fail, so a processed envelope is never processed twice.
            let keys = self.mailbox.as_mut().ok_or(ClientError::NotRegistered)?;
            keys.acked = last;
            self.save_groups()?;
            self.home.save(DEFERRED, &deferred)?;
            let keys = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?;
            self.home.save("mailbox", keys)?;
            // A lost ack is harmless: the next one covers it, and we fetch
            // after `acked` anyway.
            let _ = crate::mailbox::ack(&self.conn, keys, &mut self.counter, last).await;
            for f in followups {
                match f {
                    Followup::ReadGroupData(gid) => {
                        // Step 8: the name the creator stored; ours stays if it
                        // clashes or the SDS cannot be reached.
                        let Ok(group) = self.load_group(&gid) else { continue };
                        if let Ok(Some(name)) = self.read_group_data(&group).await {
                            let clash = self.groups.values().any(|g| g.name == name && g.id != gid);
                            if let (false, Some(meta)) = (clash, self.groups.get_mut(&gid)) {
                                meta.name = name;
                            }
                        }
                    }
                    Followup::CheckMembers(gid) => {
                        // Unreachable AS: the members stay unchecked, which
                        // refuses sends until a later check passes.
                        let name = self.group_name(&gid);
                        for (member, reason) in self.check_group(&gid).await.unwrap_or_default() {
                            events.push(Event::Unverified { group: name.clone(), member, reason });
                        }
                    }
                    Followup::RevokeCap(token) => self.owe_revoke(token)?,
                    Followup::Download { group, sender, file } => {
                        let name = file.name.clone();
                        match self.download(group.clone(), sender.clone(), file).await {
                            Ok(e) => events.push(e),
                            Err(e) => events.push(Event::FileFailed {
                                group,
                                sender,
                                name,
                                reason: e.to_string(),
                            }),
                        }
                    }
                }
            }
            self.save_groups()?;
            if full {
                // Nothing more fits until keys arrive or kept ones expire.
                break;
            }
        }
        Ok(events)
    }

    /// The envelopes waiting for a key, without those past [`DEFERRED_SECS`].
    fn load_deferred(&self) -> Result<Vec<(u64, Vec<u8>)>, ClientError> {
        let now = now_secs();
        let convert = |old: Vec<Vec<u8>>| -> Vec<(u64, Vec<u8>)> {
            old.into_iter().map(|e| (now, e)).collect()
        };
        let list = self.home.load_converting(DEFERRED, OLD_DEFERRED, convert)?.unwrap_or_default();
        Ok(list.into_iter().filter(|(since, _)| since + DEFERRED_SECS > now).collect())
    }

    /// Changes whenever an envelope key is added or dropped (the sum over
    /// every kept key of its epoch + 1: new keys are of newer epochs than the
    /// ones they push out), or a group becomes inactive (a Welcome kept for
    /// it can now be taken).
    fn key_fingerprint(&self) -> u64 {
        let keys: u64 = self.groups.values().flat_map(|g| g.keys.iter().map(|(e, _)| e + 1)).sum();
        let inactive = self.groups.values().filter(|g| !g.active).count() as u64;
        keys.wrapping_add(inactive << 40)
    }

    /// Opens one envelope by trial decryption and processes what it holds;
    /// `None` when no key of ours opens it (yet).
    fn open_and_process(
        &mut self,
        env: &[u8],
        followups: &mut Vec<Followup>,
    ) -> Result<Option<Vec<Event>>, ClientError> {
        let me = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?;
        let mut opened = None;
        'outer: for g in self.groups.values() {
            for (_, k) in g.keys.iter().rev() {
                // Envelopes stored before protocol version 2 bound the
                // mailbox id as associated data.
                if let Ok(p) =
                    envelope::open(k, env).or_else(|_| envelope::open_legacy(k, &me.id, env))
                {
                    opened = Some(p);
                    break 'outer;
                }
            }
        }
        let plain = match opened {
            Some(p) => p,
            None => match me.open_welcome(env) {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let (kind, msg) =
            envelope::unpad(&plain).map_err(|e| ClientError::Crypto(e.to_string()))?;
        let msg = MlsMessageIn::tls_deserialize_exact(msg)
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        match (kind, msg.extract()) {
            (Kind::Welcome, MlsMessageBodyIn::Welcome(w)) => {
                // For a group we still hold: kept (see `join`).
                let Some((event, gid)) = self.join(w)? else { return Ok(None) };
                followups.push(Followup::ReadGroupData(gid.clone()));
                followups.push(Followup::CheckMembers(gid));
                Ok(Some(vec![event]))
            }
            (Kind::Message, MlsMessageBodyIn::PrivateMessage(m)) => {
                self.process(m.into(), followups).map(Some)
            }
            (Kind::Message, MlsMessageBodyIn::PublicMessage(m)) => {
                self.process(m.into(), followups).map(Some)
            }
            _ => Ok(Some(Vec::new())),
        }
    }

    /// Joins by `welcome`; `None` when it is for a group we are still an
    /// active member of. That Welcome re-adds us after a removal whose commit
    /// has not reached us yet (its copy to us is still in the committer's
    /// outbox): it is kept with the envelopes waiting for a key and taken
    /// once that commit makes the group inactive. (Replacing a live group on
    /// any Welcome instead would let anyone who fetched one of our
    /// KeyPackages clobber it.)
    fn join(
        &mut self,
        welcome: openmls::prelude::Welcome,
    ) -> Result<Option<(Event, Vec<u8>)>, ClientError> {
        let cfg = MlsGroupJoinConfig::builder()
            .max_past_epochs(KEPT_EPOCHS)
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .build();
        let err = |e: openmls::group::WelcomeError<_>| ClientError::Crypto(format!("welcome: {e}"));
        // Opening a Welcome consumes its KeyPackage's private key; a Welcome
        // kept for later must find it again (restored below).
        let before = self.provider.storage().values.read().map(|v| v.clone()).ok();
        let builder =
            StagedWelcome::build_from_welcome(&self.provider, &cfg, welcome).map_err(err)?;
        // Added again to a group we were removed from: the old, inactive state
        // gives way. A Welcome for a group we are still in is refused by
        // openmls (GroupAlreadyExists), so it cannot clobber a live group.
        let wanted = builder.processed_welcome().unverified_group_info().group_id().as_slice();
        if self.groups.get(wanted).is_some_and(|g| g.active) {
            if let (Some(before), Ok(mut now)) = (before, self.provider.storage().values.write()) {
                *now = before;
            }
            return Ok(None);
        }
        let rejoin = self.groups.get(wanted).is_some_and(|g| !g.active);
        let builder = if rejoin { builder.replace_old_group() } else { builder };
        let group = builder.build().and_then(|s| s.into_group(&self.provider)).map_err(err)?;
        let gid = group.group_id().as_slice().to_vec();
        let settings: Option<GroupSettings> = group
            .extensions()
            .unknown(GROUP_SETTINGS_EXTENSION)
            .and_then(|e| codec::decode(&e.0).ok());
        let Some(settings) = settings else {
            return Err(ClientError::Crypto("group without mlsd settings".into()));
        };
        let mode = if settings.stored_roster { RosterMode::Stored } else { RosterMode::Client };
        // Our local name: the creator's, suffixed if it clashes with one of ours.
        let mut name = settings.name.clone();
        let mut n = 2;
        while self.groups.values().any(|g| g.name == name && g.id != gid) {
            name = format!("{}-{n}", settings.name);
            n += 1;
        }
        self.groups.insert(
            gid.clone(),
            GroupMeta { name: name.clone(), id: gid.clone(), mode, keys: Vec::new(), active: true },
        );
        self.remember_epoch(&group)?;
        Ok(Some((Event::Joined { group: name }, gid)))
    }

    fn process(
        &mut self,
        m: openmls::prelude::ProtocolMessage,
        followups: &mut Vec<Followup>,
    ) -> Result<Vec<Event>, ClientError> {
        let gid = m.group_id().as_slice().to_vec();
        let Some(meta) = self.groups.get(&gid).cloned() else { return Ok(Vec::new()) };
        let mut group = self.load_group(&gid)?;
        let processed = match group.process_message(&self.provider, m) {
            Ok(p) => p,
            // Our own commit echoed back, or a message for an epoch we left.
            Err(_) => return Ok(Vec::new()),
        };
        let sender = BasicCredential::try_from(processed.credential().clone())
            .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
            .unwrap_or_default();
        let mut events = Vec::new();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(a) => {
                match codec::decode::<Payload>(&Zeroizing::new(a.into_bytes())) {
                    Ok(Payload::Text(text)) => {
                        events.push(Event::Message { group: meta.name.clone(), sender, text })
                    }
                    Ok(Payload::File(file)) => followups.push(Followup::Download {
                        group: meta.name.clone(),
                        sender,
                        file,
                    }),
                    Err(_) => {}
                }
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let mine = own_cap(&group);
                group
                    .merge_staged_commit(&self.provider, *staged)
                    .map_err(|e| ClientError::Crypto(e.to_string()))?;
                if group.is_active() {
                    self.remember_epoch(&group)?;
                    followups.push(Followup::CheckMembers(gid.clone()));
                    events.push(Event::Commit {
                        group: meta.name.clone(),
                        epoch: group.epoch().as_u64(),
                    });
                } else {
                    if let Some(g) = self.groups.get_mut(&gid) {
                        g.active = false;
                    }
                    self.forget_checks(&gid);
                    if let Some(cap) = mine {
                        followups.push(Followup::RevokeCap(cap.token));
                    }
                    events.push(Event::Removed { group: meta.name.clone() });
                }
            }
            _ => {}
        }
        Ok(events)
    }
}
