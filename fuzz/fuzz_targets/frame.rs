//! The frame reader as a node runs it on every stream: length prefix checked
//! against the limit before any allocation, then the body decoded as a client
//! frame, a node frame or a response frame.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mlsd_transport::frame::{read_frame, read_message, FrameError};
use mlsd_transport::protocol::{ClientFrame, NodeFrame, ResponseFrame};

/// A small limit, so oversized prefixes are exercised too.
const MAX: u32 = 1 << 16;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let t = Duration::from_secs(5);
        let raw = read_frame(&mut &data[..], MAX, t).await;
        if let Ok(body) = &raw {
            // The reader returns exactly the announced bytes.
            assert_eq!(body.len() as u64, u32::from_be_bytes(data[..4].try_into().unwrap()) as u64);
        }
        if let Err(FrameError::TooLarge { len, max }) = raw {
            assert!(len > max);
        }
        let _ = read_message::<ClientFrame, _>(&mut &data[..], MAX, t).await;
        let _ = read_message::<NodeFrame, _>(&mut &data[..], MAX, t).await;
        let _ = read_message::<ResponseFrame, _>(&mut &data[..], MAX, t).await;
    });
});
