//! The Home Assistant simulator the other tests talk to: that it speaks the protocol.

mod protocol;
