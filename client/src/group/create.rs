//! Creating a group, and the group data every committer stores in the SDS
//! for the epoch (step 8: the group's name, readable by members only).

use super::*;
use mlsd_transport::protocol::tickets::TicketKind;
use mlsd_transport::protocol::{IdsRequest, SdsError};

impl Client {
    /// Creates a group of one (us) and registers it at the IDS.
    pub async fn create_group(&mut self, name: &str, mode: RosterMode) -> Result<(), ClientError> {
        if self.groups.values().any(|g| g.name == name) {
            return Err(ClientError::Home(format!("a group named {name:?} exists")));
        }
        // Our leaf delivers through a capability of this group's own, issued
        // once the IDS took the group (a refused creation leaves none).
        let keys = self.mailbox.as_ref().ok_or(ClientError::NotRegistered)?;
        let cap = keys.new_cap()?;
        let id = self.identity.as_ref().ok_or(ClientError::NotRegistered)?;
        let mref = keys.reference(cap.clone());
        let cwk = CredentialWithKey {
            credential: BasicCredential::new(id.client.as_bytes().to_vec()).into(),
            signature_key: id.public_key.clone().into(),
        };
        let settings =
            GroupSettings { name: name.to_string(), stored_roster: mode == RosterMode::Stored };
        let settings = codec::encode(&settings).map_err(|e| ClientError::Crypto(e.to_string()))?;
        let gc_ext = Extensions::single(Extension::Unknown(
            GROUP_SETTINGS_EXTENSION,
            UnknownExtension(settings),
        ))
        .map_err(|e| ClientError::Crypto(e.to_string()))?;
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .with_group_context_extensions(gc_ext)
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .max_past_epochs(KEPT_EPOCHS)
            .capabilities(capabilities())
            .with_leaf_node_extensions(mailbox_extension(&mref)?)
            .map_err(|e| ClientError::Crypto(e.to_string()))?
            .build();
        let group_id = GroupId::from_slice(&random32()[..16]);
        let signer = self.signer()?;
        let group = MlsGroup::new_with_group_id(&self.provider, &signer, &config, group_id, cwk)
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        let gid = group.group_id().as_slice().to_vec();
        let auth_key = export32(&group, &self.provider, EXPORT_AUTH, &[])?;
        let roster = match mode {
            RosterMode::Stored => {
                let r = roster(&[mref], &Exporter::Current(&group), &self.provider)?;
                let k = Zeroizing::new(export32(&group, &self.provider, EXPORT_ROSTER, &[])?);
                Some(seal_roster(&k, &gid, &r)?)
            }
            RosterMode::Client => None,
        };
        let req =
            Request::Ids(IdsRequest::CreateGroup { group: gid.clone(), mode, auth_key, roster });
        match self.paid_request(req).await? {
            Response::Ids(IdsResponse::GroupCreated) => {}
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        }
        self.groups.insert(
            gid.clone(),
            GroupMeta { name: name.to_string(), id: gid, mode, keys: Vec::new(), active: true },
        );
        self.remember_epoch(&group)?;
        self.save_groups()?;
        if let Err(e) = self.issue_caps(std::slice::from_ref(&cap)).await {
            // The group exists: the capability is owed, and issued again
            // before the next receive (copies to us are refused until then).
            self.owe_issue(cap)?;
            return Err(e);
        }
        self.store_group_data(&group, name).await
    }

    /// Step 8: stores the group's data for the current epoch in the SDS,
    /// encrypted, at an id only members of the epoch can derive.
    pub(super) async fn store_group_data(
        &self,
        group: &MlsGroup,
        name: &str,
    ) -> Result<(), ClientError> {
        let id = export32(group, &self.provider, EXPORT_DATA_ID, &[])?;
        let key = Zeroizing::new(export32(group, &self.provider, EXPORT_DATA_KEY, &[])?);
        let cap = Zeroizing::new(export32(group, &self.provider, EXPORT_DATA_CAP, &[])?);
        let plain = codec::encode(&GroupData { name: name.to_string() })
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        let sealed = crate::blob::seal(&key, &id, &plain)?;
        let tickets =
            self.take_tickets(TicketKind::Blob, crate::blob::chunks(sealed.len())).await?;
        crate::blob::put(&self.conn, id, *cap, &sealed, tickets).await
    }

    /// Step 8: reads the group's data of the current epoch from the SDS.
    pub(super) async fn read_group_data(
        &self,
        group: &MlsGroup,
    ) -> Result<Option<String>, ClientError> {
        let id = export32(group, &self.provider, EXPORT_DATA_ID, &[])?;
        let key = Zeroizing::new(export32(group, &self.provider, EXPORT_DATA_KEY, &[])?);
        let sealed = match crate::blob::get(&self.conn, id, 1 << 20).await {
            Ok(s) => s,
            Err(ClientError::Server(WireError::Sds(SdsError::UnknownBlob))) => return Ok(None),
            Err(e) => return Err(e),
        };
        let plain = crate::blob::open(&key, &id, &sealed)?;
        let data: GroupData =
            codec::decode(&plain).map_err(|e| ClientError::Crypto(e.to_string()))?;
        Ok(Some(data.name))
    }

    /// The SDS id of a group's data in its current epoch (tests check that a
    /// removed member cannot derive the next one).
    pub fn group_data_id(&self, name: &str) -> Result<[u8; 32], ClientError> {
        let g = self.load_group(&self.group_meta(name)?.id)?;
        export32(&g, &self.provider, EXPORT_DATA_ID, &[])
    }
}
