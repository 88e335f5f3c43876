//! Waiting on many calls at once from one task: a fan-out's batches to
//! several ODS nodes, Raft RPCs to several peers, the benchmark's load
//! lanes. Its own module so that every caller depends on it alone, not on
//! the server that happens to use it too.

use std::future::Future;
use std::pin::Pin;

/// Runs futures concurrently on this task and collects their outputs in
/// the order given (no extra crate for it).
pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..futs.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("every future completed")).collect()
}
