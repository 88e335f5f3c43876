//! Commits: adding and removing members and self-updates, one commit per
//! epoch at the IDS, with the retries that make an accepted commit land
//! (and a lost answer settled) before anything else happens in the group.

use super::*;
use mlsd_transport::protocol::IdsError;

/// How often a change is retried after losing an epoch race.
const MAX_RETRIES: usize = 5;

/// Home file of our commits whose outcome is not known yet (see `settle`).
const UNSETTLED: &str = "unsettled_commits";

enum Change {
    Add(Vec<KeyPackage>),
    Remove(Vec<String>),
    Update,
}

impl Client {
    /// Adds every current device of `identities` (KeyPackages fetched and
    /// verified as in steps 3-4) in one commit.
    pub async fn add_members(
        &mut self,
        name: &str,
        identities: &[&str],
    ) -> Result<u64, ClientError> {
        let mut kps: Vec<KeyPackage> = Vec::new();
        for identity in identities {
            let (ok, rejected) = self.fetch_key_packages(identity).await?;
            if ok.is_empty() {
                return Err(ClientError::Home(format!(
                    "no verified KeyPackage for {identity}: {rejected:?}"
                )));
            }
            kps.extend(ok.into_iter().map(|k| k.key_package));
        }
        self.commit(name, Change::Add(kps)).await
    }

    /// Adds KeyPackages obtained elsewhere in one commit, without the AS check
    /// [`Client::add_members`] makes. Any member can do this with a modified
    /// client (the IDS cannot see inside commits), which is why every member
    /// checks the members it learns ([`crate::members`]); tests use it to
    /// play that member. mlsc never calls it.
    pub async fn add_unverified_key_packages(
        &mut self,
        name: &str,
        key_packages: Vec<KeyPackage>,
    ) -> Result<u64, ClientError> {
        self.commit(name, Change::Add(key_packages)).await
    }

    /// Removes every device of each entry of `identities` (an identity), or
    /// the one device an entry names (a client id), in one commit.
    pub async fn remove_members(
        &mut self,
        name: &str,
        identities: &[&str],
    ) -> Result<u64, ClientError> {
        self.commit(name, Change::Remove(identities.iter().map(|s| s.to_string()).collect())).await
    }

    /// Updates this device's leaf (fresh encryption key) in one commit, for
    /// post-compromise security. Returns the new epoch.
    pub async fn self_update(&mut self, name: &str) -> Result<u64, ClientError> {
        self.commit(name, Change::Update).await
    }

    /// Commits `change`, retrying after processing a competing commit when the
    /// IDS answers `StaleEpoch`. Returns the new epoch.
    async fn commit(&mut self, name: &str, change: Change) -> Result<u64, ClientError> {
        for _ in 0..MAX_RETRIES {
            match self.try_commit(name, &change).await {
                Err(ClientError::Server(WireError::Ids(IdsError::StaleEpoch { .. }))) => {
                    let events = self.receive().await?;
                    self.pending_events.extend(events);
                }
                other => return other,
            }
        }
        Err(ClientError::Server(WireError::Ids(IdsError::StaleEpoch {
            current: self.group_epoch(name)?,
        })))
    }

    async fn try_commit(&mut self, name: &str, change: &Change) -> Result<u64, ClientError> {
        let meta = self.group_meta(name)?;
        self.settle(&meta.id).await?;
        let mut group = self.load_group(&meta.id)?;
        let signer = self.signer()?;
        let before: Vec<_> = members(&group);
        let (commit, welcome, welcome_to, after_refs) = match change {
            Change::Add(kps) => {
                // An identity's client that is a member already (for instance
                // through an earlier commit that `settle` just merged).
                for kp in kps {
                    let who = BasicCredential::try_from(kp.leaf_node().credential().clone())
                        .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
                        .unwrap_or_default();
                    if before.iter().any(|(_, c, _)| *c == who) {
                        return Err(ClientError::Home(format!("{who} is already a member")));
                    }
                }
                let (c, w, _) = group
                    .add_members(&self.provider, &signer, kps)
                    .map_err(|e| ClientError::Crypto(e.to_string()))?;
                let mut to = Vec::new();
                let mut refs: Vec<MailboxRef> =
                    before.iter().filter_map(|(_, _, r)| r.clone()).collect();
                for kp in kps {
                    let r = mailbox_ref_of_kp(kp).ok_or_else(|| {
                        ClientError::Home("a KeyPackage has no mailbox reference".into())
                    })?;
                    to.push(WelcomeCopy { cap: r.cap.clone(), hpke_key: r.hpke_public.clone() });
                    refs.push(r);
                }
                (c, Some(w), to, refs)
            }
            Change::Update => {
                let bundle = group
                    .self_update(
                        &self.provider,
                        &signer,
                        openmls::prelude::LeafNodeParameters::default(),
                    )
                    .map_err(|e| ClientError::Crypto(e.to_string()))?;
                let refs = before.iter().filter_map(|(_, _, r)| r.clone()).collect();
                (bundle.commit().clone(), None, Vec::new(), refs)
            }
            Change::Remove(ids) => {
                let gone: Vec<LeafNodeIndex> = before
                    .iter()
                    // An identity removes all its devices; a client id only that one.
                    .filter(|(_, c, _)| {
                        ids.iter().any(|i| *c == *i || c.split('/').next() == Some(i.as_str()))
                    })
                    .map(|(i, _, _)| *i)
                    .collect();
                if gone.is_empty() {
                    return Err(ClientError::Home(format!("none of {ids:?} is in the group")));
                }
                let (c, _, _) = group
                    .remove_members(&self.provider, &signer, &gone)
                    .map_err(|e| ClientError::Crypto(e.to_string()))?;
                let refs = before
                    .iter()
                    .filter(|(i, _, _)| !gone.contains(i))
                    .filter_map(|(_, _, r)| r.clone())
                    .collect();
                (c, None, Vec::new(), refs)
            }
        };
        let staged = group
            .pending_commit()
            .ok_or_else(|| ClientError::Crypto("no pending commit".into()))?;
        let next = Exporter::Staged(staged);
        let next_auth_key = next.export(&self.provider, EXPORT_AUTH, &[])?;
        let next_roster = match meta.mode {
            RosterMode::Stored => {
                let r = roster(&after_refs, &next, &self.provider)?;
                let k = Zeroizing::new(next.export(&self.provider, EXPORT_ROSTER, &[])?);
                Some(seal_roster(&k, &meta.id, &r)?)
            }
            RosterMode::Client => None,
        };
        let welcome = match welcome {
            Some(w) => {
                Some(w.tls_serialize_detached().map_err(|e| ClientError::Crypto(e.to_string()))?)
            }
            None => None,
        };
        let body = SendBody {
            group: meta.id.clone(),
            message_id: random32(),
            message: commit
                .tls_serialize_detached()
                .map_err(|e| ClientError::Crypto(e.to_string()))?,
            recipients: self.recipients(&group, meta.mode)?,
            skip: own_cap(&group),
            commit: Some(CommitExtras { welcome, welcome_to, next_auth_key, next_roster }),
        };
        let req = self.send_request_for(&group, body)?;
        // The same commit (same message id) until the IDS answers for sure:
        // if it accepted the commit and only its answer was lost, a new commit
        // would be refused for the old epoch, and we get no copy of our own.
        let (reach, copies) = (Patience::new(retry::COMMIT), Patience::new(retry::COPIES));
        let result = loop {
            let answer = self.conn.request(req.clone()).await;
            let again = match &answer {
                Err(e) => reach.again(e),
                // Accepted, but copies to an unavailable ODS are missing: the
                // same commit again stores only those (the IDS recognizes it).
                Ok(Response::Ids(IdsResponse::PartlySent { undelivered, .. })) => {
                    undelivered.iter().any(|u| u.reason == Undeliverable::Unavailable)
                        && copies.left()
                }
                Ok(_) => false,
            };
            if !again {
                break answer;
            }
            reach.pause().await;
            let _ = self.reconnect().await;
        };
        match result {
            Ok(
                answer @ (Response::Ids(IdsResponse::Sent { .. })
                | Response::Ids(IdsResponse::PartlySent { .. })),
            ) => {
                self.merge_accepted(&mut group, &answer, &req)?;
                self.save_groups()?;
                // Members we added came from KeyPackages we verified; this
                // records them (one lookup per identity), and rechecks none.
                let _ = self.check_group(&meta.id).await;
                // Best effort: a member who cannot read it keeps the name
                // from the group context.
                let _ = self.store_group_data(&group, &meta.name).await;
                Ok(group.epoch().as_u64())
            }
            Ok(other) => Err(ClientError::Unexpected(format!("{other:?}"))),
            // The IDS may have accepted it (only the answer was lost, or some
            // copies were not enqueued yet): keep it, and send it again before
            // anything else happens in this group (see `settle`).
            Err(e) if retry::transient(&e) => {
                let mut list = self.unsettled()?;
                list.push((meta.id.clone(), req));
                self.home.save(UNSETTLED, &list)?;
                self.save_groups()?;
                Err(e)
            }
            Err(e) => {
                let _ = group.clear_pending_commit(self.provider.storage());
                Err(e)
            }
        }
    }

    /// Merges our pending commit, which the IDS accepted with `answer`. If
    /// some members have no copy yet (`PartlySent`), the outbox sends it
    /// again (the IDS recognizes the retry) and reports who stays unserved;
    /// the group's later sends wait behind it.
    fn merge_accepted(
        &mut self,
        group: &mut MlsGroup,
        answer: &Response,
        commit: &Request,
    ) -> Result<(), ClientError> {
        group
            .merge_pending_commit(&self.provider)
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        self.remember_epoch(group)?;
        if let Response::Ids(IdsResponse::PartlySent { undelivered, .. }) = answer {
            self.note_owed(commit, undelivered)?;
            self.outbox_push(commit.clone())?;
        }
        Ok(())
    }

    fn unsettled(&self) -> Result<Vec<(Vec<u8>, Request)>, ClientError> {
        Ok(self.home.load(UNSETTLED)?.unwrap_or_default())
    }

    /// Settles a commit of ours in group `gid` whose outcome was unknown, by
    /// sending it again verbatim (same message id): the IDS answers `Sent` if
    /// it had accepted it, and we merge it (no copy of our own commit ever
    /// reaches us, so dropping it would leave us an epoch behind for good);
    /// `StaleEpoch` or another refusal means it never took effect. Until this
    /// succeeds nothing else is done in the group: envelopes of the epoch our
    /// commit may have started would not open yet.
    async fn settle(&mut self, gid: &[u8]) -> Result<(), ClientError> {
        let mut list = self.unsettled()?;
        let Some(pos) = list.iter().position(|(g, _)| g == gid) else { return Ok(()) };
        let mut group = self.load_group(gid)?;
        match self.conn.request(list[pos].1.clone()).await {
            Ok(
                answer @ (Response::Ids(IdsResponse::Sent { .. })
                | Response::Ids(IdsResponse::PartlySent { .. })),
            ) if group.pending_commit().is_some() => {
                self.merge_accepted(&mut group, &answer, &list[pos].1)?;
            }
            Err(e) if retry::transient(&e) => return Err(e),
            _ => {
                let _ = group.clear_pending_commit(self.provider.storage());
            }
        }
        list.remove(pos);
        self.home.save(UNSETTLED, &list)?;
        self.save_groups()
    }

    /// Settles every unsettled commit (see `settle`).
    pub(super) async fn settle_all(&mut self) -> Result<(), ClientError> {
        let groups: Vec<Vec<u8>> = self.unsettled()?.into_iter().map(|(g, _)| g).collect();
        for g in groups {
            self.settle(&g).await?;
        }
        Ok(())
    }
}
