//! The buffer's side of delivery: the sinks report which buffer records are delivered.
//!
//! Runs against the data flow (sink → buffer), like every module of [`crate::feedback`].

/// The sink's delivery reports to the durable buffer: "every record up to this sequence is delivered".
///
/// Sinks deliver in order, so one number says it all; the buffer's acknowledging
/// task reads the latest value and removes the records (several reports made
/// while it works are coalesced).
#[derive(Debug, Clone)]
pub struct Acks(tokio::sync::watch::Sender<u64>);

impl Acks {
    /// A reporter and the receiver the buffer's acknowledging task reads.
    pub fn channel() -> (Acks, tokio::sync::watch::Receiver<u64>) {
        let (tx, rx) = tokio::sync::watch::channel(0);
        (Acks(tx), rx)
    }

    /// A reporter whose receiver starts at `seq` (a target's saved position: reports at or below it change nothing).
    pub fn channel_from(seq: u64) -> (Acks, tokio::sync::watch::Receiver<u64>) {
        let (tx, rx) = tokio::sync::watch::channel(seq);
        (Acks(tx), rx)
    }

    /// Records up to and including `seq` are delivered (or set aside as dead letters).
    pub fn delivered(&self, seq: u64) {
        self.0.send_if_modified(|v| {
            if seq > *v {
                *v = seq;
                true
            } else {
                false
            }
        });
    }
}

/// Waits until one of the still-`open` delivery reports changes, or closes (then marked
/// in `open`); returns at once when none is open. The buffer's acknowledger and the
/// writer's lanes both merge several reports with it.
pub async fn next_report(reports: &mut [tokio::sync::watch::Receiver<u64>], open: &mut [bool]) {
    if !open.iter().any(|o| *o) {
        return;
    }
    let waits = reports
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| open[*i])
        .map(|(i, rx)| Box::pin(async move { (i, rx.changed().await.is_ok()) }));
    let ((i, still_open), _, rest) = futures_util::future::select_all(waits).await;
    drop(rest);
    open[i] = still_open;
}
