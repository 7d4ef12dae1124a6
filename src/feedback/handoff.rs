//! Upstream acknowledgement: tells a source when the events it handed on are safe.
//!
//! A source that can have its input sent again (an MQTT broker holding unacknowledged
//! QoS 1/2 messages, Home Assistant's history behind the resume cursor) must not
//! acknowledge or advance before the points are safe. Each such source
//! [`register`](Handoff::register)s a [`Tracker`] and stamps its events with
//! strictly increasing [`Mark`]s. The pipeline carries the highest mark per source
//! of every chunk ([`Marks`]) — for filtered events too — and the stage that makes
//! the chunk safe releases it: the durable buffer once the record (or, for a chunk
//! with no points, every record before it) is fsynced; without the buffer, the
//! moment the sink takes the chunk. Every stage keeps order, so "mark N is safe"
//! means every earlier mark of that source is safe as well: one watermark per
//! source suffices, and many releases made while a source is busy coalesce.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// A source's position stamped on one event; [`Mark::NONE`] for sources that need no acknowledgement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mark {
    /// 1-based index of the registered source; 0: none.
    source: u32,
    /// The source's sequence number, from 1.
    seq: u64,
}

impl Mark {
    /// No acknowledgement wanted.
    pub const NONE: Mark = Mark { source: 0, seq: 0 };

    /// Whether the event carries no mark.
    pub fn is_none(&self) -> bool {
        self.source == 0
    }

    /// The source's sequence number (0 for [`Mark::NONE`]).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether both marks were stamped by the same source.
    pub fn same_source(&self, other: &Mark) -> bool {
        self.source == other.source
    }

    /// The same source's mark just before this one ([`Mark::NONE`] before the first): what is safe while this one is held.
    pub fn previous(&self) -> Mark {
        if self.seq <= 1 {
            Mark::NONE
        } else {
            Mark {
                source: self.source,
                seq: self.seq - 1,
            }
        }
    }
}

/// The highest mark per source among a chunk's events; a chunk rarely holds more than one or two sources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Marks(Vec<Mark>);

impl Marks {
    /// Notes one event's mark (no-op for [`Mark::NONE`]).
    #[inline]
    pub fn note(&mut self, mark: Mark) {
        if mark.is_none() {
            return;
        }
        match self.0.iter_mut().find(|m| m.source == mark.source) {
            Some(m) => m.seq = m.seq.max(mark.seq),
            None => self.0.push(mark),
        }
    }

    /// Takes in another set (the later chunk's marks win per source, as they are higher).
    pub fn merge(&mut self, other: &Marks) {
        for m in &other.0 {
            self.note(*m);
        }
    }

    /// Whether no source wants an acknowledgement for this chunk.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The registry of acknowledging sources, shared by the sources and the stage that releases.
#[derive(Debug, Default)]
pub struct Handoff {
    sources: Mutex<Vec<(Arc<str>, watch::Sender<u64>)>>,
}

impl Handoff {
    /// An empty registry.
    pub fn new() -> Arc<Handoff> {
        Arc::new(Handoff::default())
    }

    /// Registers a source (by name, for logs); its events' marks start at 1.
    pub fn register(&self, name: &str) -> Tracker {
        let (tx, rx) = watch::channel(0);
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.push((Arc::from(name), tx));
        Tracker {
            source: sources.len() as u32,
            next: 1,
            safe: rx,
        }
    }

    /// Every event up to each of these marks is safe; wakes the sources that wait.
    pub fn release(&self, marks: &Marks) {
        if marks.is_empty() {
            return;
        }
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        for m in &marks.0 {
            if let Some((_, tx)) = sources.get(m.source as usize - 1) {
                tx.send_if_modified(|v| {
                    if m.seq > *v {
                        *v = m.seq;
                        true
                    } else {
                        false
                    }
                });
            }
        }
    }
}

/// One source's side: hands out marks and tells which are safe.
#[derive(Debug)]
pub struct Tracker {
    source: u32,
    next: u64,
    safe: watch::Receiver<u64>,
}

impl Tracker {
    /// The next mark, strictly higher than the previous one.
    pub fn mark(&mut self) -> Mark {
        let m = Mark {
            source: self.source,
            seq: self.next,
        };
        self.next += 1;
        m
    }

    /// The highest sequence number released so far (every lower one is safe too).
    pub fn safe(&self) -> u64 {
        *self.safe.borrow()
    }

    /// A receiver of the released watermark, for a task that waits on it (`changed()`).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.safe.clone()
    }

    /// Waits until `seq` is safe; `false` when the releasing side is gone first.
    pub async fn wait_safe(&mut self, seq: u64) -> bool {
        self.safe.wait_for(|v| *v >= seq).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_keep_the_highest_per_source_and_ignore_none() {
        let handoff = Handoff::new();
        let mut a = handoff.register("a");
        let mut b = handoff.register("b");
        let (a1, a2, b1) = (a.mark(), a.mark(), b.mark());
        let mut marks = Marks::default();
        marks.note(a2);
        marks.note(a1);
        marks.note(Mark::NONE);
        marks.note(b1);
        assert_eq!(marks.0, vec![a2, b1]);
        handoff.release(&marks);
        assert_eq!((a.safe(), b.safe()), (2, 1));
        // A lower release never moves a watermark back.
        let mut low = Marks::default();
        low.note(a1);
        handoff.release(&low);
        assert_eq!(a.safe(), 2);
    }

    #[tokio::test]
    async fn wait_safe_wakes_on_release() {
        let handoff = Handoff::new();
        let mut t = handoff.register("s");
        let m = t.mark();
        let h = handoff.clone();
        let releaser = tokio::spawn(async move {
            let mut marks = Marks::default();
            marks.note(m);
            h.release(&marks);
        });
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(5), t.wait_safe(m.seq()))
                .await
                .expect("released within the deadline")
        );
        releaser.await.expect("releaser");
    }
}
