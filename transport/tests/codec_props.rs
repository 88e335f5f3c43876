//! Property tests of the wire codec and framing: every request and response
//! round-trips, and no byte string makes the decoder panic or over-allocate.

use mlsd_transport::codec::{decode, encode};
use mlsd_transport::protocol::{
    AsRequest, BadFrame, ClientFrame, CsRequest, IdsError, MailboxAuth, NodeFrame, OdsRequest,
    Ping, Pong, Request, Response, ResponseFrame, SdsRequest, WireError,
};
use mlsd_transport::Role;
use proptest::prelude::*;

fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(Role::ALL.to_vec())
}

fn bytes32() -> impl Strategy<Value = [u8; 32]> {
    prop::array::uniform32(any::<u8>())
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (role(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(role, key)| Request::Ping(Ping { role, key })),
        "[a-z]{1,20}".prop_map(|identity| Request::As(AsRequest::Lookup { identity })),
        ("[a-z]{1,20}", prop::option::of("[a-z]{1,8}/[a-z]{1,8}"))
            .prop_map(|(identity, after)| Request::As(AsRequest::LookupPage { identity, after })),
        "[a-z]{1,20}".prop_map(|identity| Request::Cs(CsRequest::FetchKeyPackages { identity })),
        (
            bytes32(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..64),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(mailbox, counter, signature, after, limit)| Request::Ods(
                OdsRequest::Fetch {
                    auth: MailboxAuth { mailbox, counter, signature },
                    after,
                    limit
                }
            )),
        (
            bytes32(),
            bytes32(),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..256)
        )
            .prop_map(|(id, cap, offset, total, data)| Request::Sds(SdsRequest::PutBlob {
                id,
                cap,
                offset,
                total,
                data
            })),
    ]
}

proptest! {
    #[test]
    fn requests_round_trip(req in request()) {
        let frame = ClientFrame::new(req);
        let bytes = encode(&frame).unwrap();
        prop_assert_eq!(decode::<ClientFrame>(&bytes).unwrap(), frame);
    }

    #[test]
    fn responses_round_trip(node in "[a-z0-9]{1,10}", role in role(), msg in ".{0,40}") {
        for r in [
            Response::Pong(Pong { node: node.clone(), role }),
            Response::Error(WireError::Frame(BadFrame::Malformed(msg.clone()))),
            Response::Error(WireError::Ids(IdsError::StaleEpoch { current: msg.len() as u64 })),
        ] {
            let f = ResponseFrame::new(r);
            prop_assert_eq!(decode::<ResponseFrame>(&encode(&f).unwrap()).unwrap(), f);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<ClientFrame>(&bytes);
        let _ = decode::<NodeFrame>(&bytes);
        let _ = decode::<ResponseFrame>(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(req in request(), pos in any::<usize>(), val in any::<u8>()) {
        let mut bytes = encode(&ClientFrame::new(req)).unwrap();
        let i = pos % bytes.len();
        bytes[i] = val;
        let _ = decode::<ClientFrame>(&bytes);
        bytes.truncate(i);
        let _ = decode::<ClientFrame>(&bytes);
    }
}
