//! Anonymous quota tickets (decision D12): both halves of the partially
//! oblivious PRF (RFC 9497, POPRF mode, ristretto255-SHA512) that lets the
//! AS hand a device its day's allowance of tickets without learning which
//! ticket it later spends.
//!
//! A ticket is a random 32-byte input and the PRF's 64-byte output under the
//! AS's ticket key, evaluated with the public info `(kind, day)`. The client
//! blinds its inputs, the AS evaluates them blindly (counting them against the
//! identity's allowance) and proves it used its one ticket key, and the
//! client unblinds. Whoever holds the key checks a ticket by evaluating its
//! input again; nothing in the ticket ties it to the issuing request.

use rand_08::rngs::StdRng;
use rand_08::SeedableRng;
use rand_core_06::OsRng;
use voprf::{
    BlindedElement, EvaluationElement, Group, PoprfClient, PoprfServer, Proof, Ristretto255,
};
use zeroize::Zeroizing;

use crate::protocol::tickets::{info, Ticket, TicketKind, OUTPUT_LEN};

/// Why a ticket operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// A blinded or evaluated element, a proof or a key is not a valid encoding.
    #[error("malformed ticket element: {0}")]
    Malformed(&'static str),
    /// The proof does not show the evaluation used the expected key.
    #[error("ticket proof does not verify")]
    BadProof,
}

/// The AS's side: its ticket key, derived from the AS signing key so every
/// AS node (each holds `as.key`) has the same one and no new secret exists.
pub struct TicketIssuer(PoprfServer<Ristretto255>);

impl TicketIssuer {
    /// The issuer whose key is derived from the 32-byte AS signing key seed.
    pub fn from_as_secret(secret: &[u8; 32]) -> Result<Self, TicketError> {
        let seed = Zeroizing::new(blake3::derive_key("mlsd ticket key v1", secret));
        PoprfServer::new_from_seed(seed.as_ref(), b"mlsd tickets")
            .map(TicketIssuer)
            .map_err(|_| TicketError::Malformed("ticket key"))
    }

    /// The public key clients check the AS's proofs against.
    pub fn public_key(&self) -> [u8; 32] {
        let mut k = [0u8; 32];
        k.copy_from_slice(&<Ristretto255 as Group>::serialize_elem(self.0.get_public_key()));
        k
    }

    /// Evaluates `blinded` for `(kind, day)`; the evaluations in order and one
    /// proof over all of them. The proof's nonce is drawn from a generator
    /// seeded with `random` (fresh random bytes of the caller's: the AS logic
    /// gets them with its request, so a decision replays exactly).
    pub fn issue(
        &self,
        kind: TicketKind,
        day: u32,
        blinded: &[[u8; 32]],
        random: &[u8; 32],
    ) -> Result<(Vec<[u8; 32]>, Vec<u8>), TicketError> {
        let elems = blinded
            .iter()
            .map(|b| BlindedElement::<Ristretto255>::deserialize(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TicketError::Malformed("blinded element"))?;
        let info = info(kind, day);
        let out = self
            .0
            .batch_blind_evaluate(&mut StdRng::from_seed(*random), &elems, Some(&info))
            .map_err(|_| TicketError::Malformed("evaluation"))?;
        let evaluated = out
            .messages
            .iter()
            .map(|m| {
                let mut e = [0u8; 32];
                e.copy_from_slice(&m.serialize());
                e
            })
            .collect();
        Ok((evaluated, out.proof.serialize().to_vec()))
    }

    /// Whether `t` is a ticket this key issued for its kind and day (a
    /// constant-time comparison of the PRF output).
    pub fn check(&self, t: &Ticket) -> bool {
        use subtle_eq::ct_eq;
        let Ok(out) = self.0.evaluate(&t.input, Some(&info(t.kind, t.day))) else {
            return false;
        };
        t.output.len() == OUTPUT_LEN && ct_eq(&out, &t.output)
    }
}

/// A constant-time byte comparison, so a forged ticket's timing says nothing
/// about how close it came.
mod subtle_eq {
    pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// One ticket being issued, on the client: its input and the blind, kept
/// until the AS's answer arrives (the blind is zeroized on drop).
pub struct Pending {
    input: [u8; 32],
    state: PoprfClient<Ristretto255>,
}

/// `n` fresh ticket inputs, blinded: what to keep, and what to send.
pub fn blind(n: usize) -> Result<(Vec<Pending>, Vec<[u8; 32]>), TicketError> {
    let mut pending = Vec::with_capacity(n);
    let mut blinded = Vec::with_capacity(n);
    for _ in 0..n {
        let mut input = [0u8; 32];
        rand_core_06::RngCore::fill_bytes(&mut OsRng, &mut input);
        let r = PoprfClient::<Ristretto255>::blind(&input, &mut OsRng)
            .map_err(|_| TicketError::Malformed("blind"))?;
        let mut b = [0u8; 32];
        b.copy_from_slice(&r.message.serialize());
        pending.push(Pending { input, state: r.state });
        blinded.push(b);
    }
    Ok((pending, blinded))
}

/// The tickets of `pending`, from the AS's `evaluated` elements and `proof`,
/// checked against the ticket `key`: either every ticket or an error.
pub fn finalize(
    kind: TicketKind,
    day: u32,
    pending: &[Pending],
    evaluated: &[[u8; 32]],
    proof: &[u8],
    key: &[u8; 32],
) -> Result<Vec<Ticket>, TicketError> {
    if evaluated.len() != pending.len() {
        return Err(TicketError::Malformed("evaluation count"));
    }
    let messages = evaluated
        .iter()
        .map(|e| EvaluationElement::<Ristretto255>::deserialize(e))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TicketError::Malformed("evaluated element"))?;
    let proof =
        Proof::<Ristretto255>::deserialize(proof).map_err(|_| TicketError::Malformed("proof"))?;
    let pk = <Ristretto255 as Group>::deserialize_elem(key)
        .map_err(|_| TicketError::Malformed("ticket key"))?;
    let info = info(kind, day);
    let states: Vec<PoprfClient<Ristretto255>> = pending.iter().map(|p| p.state.clone()).collect();
    let inputs: Vec<&[u8]> = pending.iter().map(|p| &p.input[..]).collect();
    let outputs = PoprfClient::batch_finalize(
        inputs.iter().copied(),
        &states,
        &messages,
        &proof,
        pk,
        Some(&info),
    )
    .map_err(|_| TicketError::BadProof)?
    .collect::<Result<Vec<_>, _>>()
    .map_err(|_| TicketError::BadProof)?;
    Ok(pending
        .iter()
        .zip(outputs)
        .map(|(p, o)| Ticket { kind, day, input: p.input, output: o.to_vec() })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(seed: u8) -> TicketIssuer {
        TicketIssuer::from_as_secret(&[seed; 32]).unwrap()
    }

    #[test]
    fn an_issued_ticket_checks_for_its_kind_and_day_only() {
        let as_ = issuer(1);
        let (pending, blinded) = blind(3).unwrap();
        let (evaluated, proof) = as_.issue(TicketKind::Group, 100, &blinded, &[1; 32]).unwrap();
        let tickets =
            finalize(TicketKind::Group, 100, &pending, &evaluated, &proof, &as_.public_key())
                .unwrap();
        assert_eq!(tickets.len(), 3);
        for t in &tickets {
            assert!(as_.check(t));
            assert!(!as_.check(&Ticket { day: 101, ..t.clone() }), "another day");
            assert!(!as_.check(&Ticket { kind: TicketKind::Fetch, ..t.clone() }), "another kind");
            assert!(!issuer(2).check(t), "another AS key");
            let mut forged = t.clone();
            forged.output[0] ^= 1;
            assert!(!as_.check(&forged));
        }
        // Nothing the AS saw (the blinded elements) is in the tickets.
        for (b, t) in blinded.iter().zip(&tickets) {
            assert_ne!(&t.input, b);
        }
    }

    #[test]
    fn a_proof_under_another_key_is_refused() {
        let (pending, blinded) = blind(2).unwrap();
        let (evaluated, proof) = issuer(1).issue(TicketKind::Fetch, 5, &blinded, &[2; 32]).unwrap();
        let other = issuer(2).public_key();
        assert!(matches!(
            finalize(TicketKind::Fetch, 5, &pending, &evaluated, &proof, &other),
            Err(TicketError::BadProof)
        ));
        // Evaluated for another kind than the client asked for: refused too.
        assert!(finalize(
            TicketKind::Blob,
            5,
            &pending,
            &evaluated,
            &proof,
            &issuer(1).public_key()
        )
        .is_err());
    }

    #[test]
    fn garbage_blinded_elements_are_refused() {
        assert!(issuer(1).issue(TicketKind::Fetch, 5, &[[0xff; 32]], &[3; 32]).is_err());
    }
}
