//! An identity's devices, as one of its devices sees and manages them.
//!
//! A new device of an identity that has devices registers like any other
//! (`Client::register`), but the AS binds it only once a live device of the
//! identity approves it; until then `register` answers
//! [`ClientError::AwaitsApproval`] with the key's fingerprint, which the
//! approving device shows too, so a person can tell their own new device
//! from a stranger's request for the same name.
//!
//! Strangers can fill that queue with requests for the same names, so a
//! live device can also admit a new one by an approval code ([`Client::admit`]):
//! it shows the code, the person types it into the new device, whose
//! `register` carries it as its token and is bound at once (also where the
//! AS requires enrollment tokens, which keeps no pending requests at all).

use mlsd_transport::protocol::r#as::{
    admission_hash, LABEL_ADMIT, LABEL_APPROVE, LABEL_DEVICES, LABEL_REVOKE_DEVICE,
};
use mlsd_transport::protocol::{
    AdmitBody, ApproveBody, AsRequest, AsResponse, DevicesBody, PendingDevice, RevokeDeviceBody,
    SignedBinding,
};
use mlsd_transport::{Request, Response};
use zeroize::Zeroizing;

use crate::client::{unexpected, Client};
use crate::connection::ClientError;
use crate::state::now_secs;

/// What a revocation did.
#[derive(Debug)]
pub enum Revoked {
    /// The device's binding is revoked.
    Device(SignedBinding),
    /// It had no binding yet: its pending registration is declined.
    Declined,
}

/// Symbols of an approval code: Crockford's base32 (no I, L, O or U, so
/// nothing reads as something else).
const CODE_SYMBOLS: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols in an approval code: 60 random bits, which nobody guesses in the
/// hour it is good for, typed as three groups of four.
const CODE_LEN: usize = 12;

/// A fresh approval code, `XXXX-XXXX-XXXX`.
fn approval_code() -> Result<Zeroizing<String>, ClientError> {
    let mut random = Zeroizing::new([0u8; CODE_LEN]);
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, random.as_mut())
        .map_err(|e| ClientError::Crypto(format!("no randomness: {e}")))?;
    let mut code = Zeroizing::new(String::with_capacity(CODE_LEN + 2));
    for (i, b) in random.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            code.push('-');
        }
        code.push(char::from(CODE_SYMBOLS[usize::from(b & 31)]));
    }
    Ok(code)
}

/// An approval code as typed, in the one form its hash is taken of:
/// upper case, without dashes or spaces, O read as 0 and I or L as 1.
pub fn normalize_code(typed: &str) -> Zeroizing<String> {
    let mut code = Zeroizing::new(String::with_capacity(typed.len()));
    for c in typed.chars().filter(|c| *c != '-' && !c.is_whitespace()) {
        code.push(match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        });
    }
    code
}

impl Client {
    /// Admits `client`, a new device of this identity, by a fresh approval
    /// code (returned, with the Unix time it lapses): the new device's
    /// `register` with that code as its token is bound at once, without a
    /// pending request. The AS keeps only the code's hash until then.
    pub async fn admit(&self, client: &str) -> Result<(Zeroizing<String>, u64), ClientError> {
        let approver = self.client_id().ok_or(ClientError::NotRegistered)?.to_string();
        let code = approval_code()?;
        let body = AdmitBody {
            approver,
            client: client.to_string(),
            code_hash: admission_hash(client, &normalize_code(&code)),
            timestamp: now_secs(),
        };
        let signature = self.sign(LABEL_ADMIT, &body)?;
        match self.conn.request(Request::As(AsRequest::Admit { body, signature })).await? {
            Response::As(AsResponse::Admitted { expires_at, .. }) => Ok((code, expires_at)),
            other => Err(unexpected(other)),
        }
    }

    /// This identity's devices (revoked ones marked) and pending
    /// registrations, as the AS tells one of its live devices.
    pub async fn devices(&self) -> Result<(Vec<SignedBinding>, Vec<PendingDevice>), ClientError> {
        let client = self.client_id().ok_or(ClientError::NotRegistered)?.to_string();
        let body = DevicesBody { client, timestamp: now_secs() };
        let signature = self.sign(LABEL_DEVICES, &body)?;
        match self.conn.request(Request::As(AsRequest::Devices { body, signature })).await? {
            Response::As(AsResponse::Devices { bindings, pending }) => Ok((bindings, pending)),
            other => Err(unexpected(other)),
        }
    }

    /// Approves the pending registration of `client`, a new device of this
    /// identity, whose key is `signature_key`; the AS binds it.
    pub async fn approve(
        &self,
        client: &str,
        signature_key: Vec<u8>,
    ) -> Result<SignedBinding, ClientError> {
        let approver = self.client_id().ok_or(ClientError::NotRegistered)?.to_string();
        let body = ApproveBody {
            approver,
            client: client.to_string(),
            signature_key,
            timestamp: now_secs(),
        };
        let signature = self.sign(LABEL_APPROVE, &body)?;
        match self.conn.request(Request::As(AsRequest::Approve { body, signature })).await? {
            Response::As(AsResponse::Binding(b)) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Revokes `client`, another device of this identity (a lost one), or
    /// declines its pending registration.
    pub async fn revoke_device(&self, client: &str) -> Result<Revoked, ClientError> {
        let by = self.client_id().ok_or(ClientError::NotRegistered)?.to_string();
        let body = RevokeDeviceBody { by, client: client.to_string(), timestamp: now_secs() };
        let signature = self.sign(LABEL_REVOKE_DEVICE, &body)?;
        match self.conn.request(Request::As(AsRequest::RevokeDevice { body, signature })).await? {
            Response::As(AsResponse::Binding(b)) => Ok(Revoked::Device(b)),
            Response::As(AsResponse::Devices { .. }) => Ok(Revoked::Declined),
            other => Err(unexpected(other)),
        }
    }
}
