//! Sending application messages: preparing the MLS message and its `Send`
//! request, and sending it.

use super::*;

impl Client {
    /// Sends a text message to the group.
    pub async fn send_text(&mut self, name: &str, text: &str) -> Result<u32, ClientError> {
        // Members still unchecked (the AS was unreachable) get checked now.
        let _ = self.check_members(name).await;
        let req = self.prepare_text(name, text)?;
        sent_copies(self.send_request(req).await?)
    }

    /// Sends a prepared `Send`, retrying it verbatim (same message id) for a
    /// moment after a transient failure ([`crate::retry`]).
    pub async fn send_request(&self, req: Request) -> Result<Response, ClientError> {
        let patience = Patience::new(retry::SEND);
        loop {
            match self.conn.request(req.clone()).await {
                Err(e) if patience.again(&e) => patience.pause().await,
                other => return other,
            }
        }
    }

    /// The `Send` request for a text message, MAC'd for the current epoch,
    /// without sending it (the outbox and tests keep it to retry verbatim).
    pub fn prepare_text(&mut self, name: &str, text: &str) -> Result<Request, ClientError> {
        self.prepare_payload(name, &Payload::Text(text.to_string()))
    }

    /// Like [`Client::prepare_text`] under a message id of the caller's
    /// choosing, for tools and tests that check what the IDS does with a
    /// reused id (an honest client never reuses one).
    pub fn prepare_text_with_id(
        &mut self,
        name: &str,
        text: &str,
        message_id: [u8; 32],
    ) -> Result<Request, ClientError> {
        self.prepare_payload_as(name, &Payload::Text(text.to_string()), message_id)
    }

    pub(super) fn prepare_payload(
        &mut self,
        name: &str,
        payload: &Payload,
    ) -> Result<Request, ClientError> {
        self.prepare_payload_as(name, payload, random32())
    }

    fn prepare_payload_as(
        &mut self,
        name: &str,
        payload: &Payload,
        message_id: [u8; 32],
    ) -> Result<Request, ClientError> {
        let meta = self.group_meta(name)?;
        self.refuse_unverified(&meta.id, name)?;
        let mut group = self.load_group(&meta.id)?;
        let signer = self.signer()?;
        let payload =
            Zeroizing::new(codec::encode(payload).map_err(|e| ClientError::Crypto(e.to_string()))?);
        let msg = group
            .create_message(&self.provider, &signer, &payload)
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        let bytes = msg.tls_serialize_detached().map_err(|e| ClientError::Crypto(e.to_string()))?;
        let body = SendBody {
            group: meta.id.clone(),
            message_id,
            message: bytes,
            recipients: self.recipients(&group, meta.mode)?,
            skip: own_cap(&group),
            commit: None,
        };
        self.save_groups()?;
        self.send_request_for(&group, body)
    }
}
