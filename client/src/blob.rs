//! SDS blobs from the client side: chunked upload and download, and the
//! encryption of attachments and group data (the SDS only ever sees
//! ciphertext under keys it does not have).

use mlsd_transport::limits::MAX_CHUNK;
use mlsd_transport::protocol::tickets::Ticket;
use mlsd_transport::protocol::{SdsRequest, SdsResponse};
use mlsd_transport::{Request, Response};
use zeroize::Zeroizing;

use crate::{ClientError, Connection};

/// How many chunks (and so blob tickets) writing `len` bytes takes.
pub fn chunks(len: usize) -> usize {
    len.div_ceil(MAX_CHUNK).max(1)
}

/// Writes `data` as blob `id` with write capability `cap`, chunk by chunk,
/// each chunk paying with one of `tickets` ([`chunks`] of them).
pub async fn put(
    conn: &Connection,
    id: [u8; 32],
    cap: [u8; 32],
    data: &[u8],
    tickets: Vec<Ticket>,
) -> Result<(), ClientError> {
    let total = data.len() as u64;
    let mut offset = 0usize;
    let mut tickets = tickets.into_iter();
    loop {
        let end = (offset + MAX_CHUNK).min(data.len());
        let chunk = data[offset..end].to_vec();
        let req = Request::Sds(SdsRequest::PutBlob {
            id,
            cap,
            offset: offset as u64,
            total,
            data: chunk,
        });
        match conn.request_paid(req, tickets.next()).await? {
            Response::Sds(SdsResponse::BlobWritten { written }) if written == end as u64 => {}
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        }
        offset = end;
        if offset >= data.len() {
            return Ok(());
        }
    }
}

/// Reads blob `id` whole, refusing more than `max` bytes.
pub async fn get(conn: &Connection, id: [u8; 32], max: u64) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    loop {
        let req = Request::Sds(SdsRequest::GetBlob {
            id,
            offset: out.len() as u64,
            max: MAX_CHUNK as u32,
        });
        match conn.request(req).await? {
            Response::Sds(SdsResponse::Blob { total, data }) => {
                if total > max {
                    return Err(ClientError::Unexpected(format!(
                        "blob of {total} bytes is too large"
                    )));
                }
                if data.is_empty() && (out.len() as u64) < total {
                    return Err(ClientError::Unexpected("blob ended early".into()));
                }
                out.extend_from_slice(&data);
                if out.len() as u64 >= total {
                    return Ok(out);
                }
            }
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// Deletes blob `id`.
pub async fn delete(conn: &Connection, id: [u8; 32], cap: [u8; 32]) -> Result<(), ClientError> {
    match conn.request(Request::Sds(SdsRequest::DeleteBlob { id, cap })).await? {
        Response::Sds(SdsResponse::BlobDeleted) => Ok(()),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// Encrypts `plain` under `key` for blob `id`: `nonce(24) || ciphertext`.
pub fn seal(key: &[u8; 32], id: &[u8; 32], plain: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut nonce = [0u8; 24];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut nonce)
        .map_err(|e| ClientError::Crypto(e.to_string()))?;
    mlsd_transport::sealed::seal_prefixed(key, &nonce, id, plain)
        .map_err(|_| ClientError::Crypto("sealing a blob".into()))
}

/// Decrypts what [`seal`] made.
pub fn open(
    key: &[u8; 32],
    id: &[u8; 32],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    mlsd_transport::sealed::open_prefixed(key, id, sealed)
        .map_err(|_| ClientError::Crypto("blob does not decrypt".into()))
}
