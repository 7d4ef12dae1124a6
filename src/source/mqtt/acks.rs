//! The ordered queue of received QoS 1/2 messages that wait for their acknowledgement.
//!
//! A message may be acknowledged once (a) every event emitted up to the moment it
//! was processed is safe (its `needs` mark is at or below the handoff watermark) and
//! (b) no part of it is still held by a decoder (its arrival `seq` is below
//! `Decoders::oldest_held`). MQTT wants acknowledgements in arrival order, and the
//! watermark moves in runs, so the queue releases its ready prefix in one go.

use std::collections::VecDeque;

/// One received message waiting for its PUBACK (QoS 1) or PUBREC (QoS 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unacked {
    /// Packet id to acknowledge.
    pub pkid: u16,
    /// 1 or 2.
    pub qos: u8,
    /// The client's arrival counter.
    pub seq: u64,
    /// The last handoff mark emitted when it was processed (0: none yet).
    pub needs: u64,
}

/// Received, unacknowledged messages in arrival order.
#[derive(Debug, Default)]
pub struct AckQueue {
    queue: VecDeque<Unacked>,
}

impl AckQueue {
    /// An empty queue.
    pub fn new() -> Self {
        AckQueue::default()
    }

    /// Adds a message at the back (arrival order).
    pub fn push(&mut self, m: Unacked) {
        self.queue.push_back(m);
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Forgets every message (the connection is gone: the broker sends them again).
    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// Events emitted now (mark `mark`) may carry content of messages from `seq` on that a
    /// decoder held: those messages now wait for `mark` too.
    pub fn raise_from(&mut self, seq: u64, mark: u64) {
        for m in self.queue.iter_mut().rev() {
            if m.seq < seq {
                break;
            }
            m.needs = m.needs.max(mark);
        }
    }

    /// The first message, if it may be acknowledged now.
    pub fn ready_front(&self, safe: u64, oldest_held: Option<u64>) -> Option<Unacked> {
        self.queue
            .front()
            .filter(|m| m.needs <= safe && oldest_held.is_none_or(|h| m.seq < h))
            .copied()
    }

    /// Removes the first message (after it was acknowledged).
    pub fn pop_front(&mut self) {
        self.queue.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: u64, needs: u64) -> Unacked {
        Unacked {
            pkid: seq as u16,
            qos: 1,
            seq,
            needs,
        }
    }

    fn drain(q: &mut AckQueue, safe: u64, held: Option<u64>) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(u) = q.ready_front(safe, held) {
            out.push(u.seq);
            q.pop_front();
        }
        out
    }

    #[test]
    fn releases_the_ready_prefix_in_order() {
        let mut q = AckQueue::new();
        q.push(m(1, 0));
        q.push(m(2, 3));
        q.push(m(3, 3));
        q.push(m(4, 5));
        q.push(m(5, 5));
        assert_eq!(drain(&mut q, 0, None), vec![1]);
        assert_eq!(drain(&mut q, 4, None), vec![2, 3]);
        assert_eq!(q.len(), 2);
        assert_eq!(drain(&mut q, 9, None), vec![4, 5]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_held_message_blocks_itself_and_later_ones() {
        let mut q = AckQueue::new();
        for s in 1..=4 {
            q.push(m(s, 1));
        }
        assert_eq!(drain(&mut q, 10, Some(3)), vec![1, 2]);
        // The group holding seq 3 is emitted with mark 7: 3 and 4 now wait for it.
        q.raise_from(3, 7);
        assert_eq!(drain(&mut q, 6, None), Vec::<u64>::new());
        assert_eq!(drain(&mut q, 7, None), vec![3, 4]);
    }

    #[test]
    fn raise_never_lowers_and_clear_forgets() {
        let mut q = AckQueue::new();
        q.push(m(1, 9));
        q.push(m(2, 9));
        q.raise_from(1, 4);
        assert_eq!(q.ready_front(8, None), None);
        q.clear();
        assert!(q.is_empty());
    }
}
