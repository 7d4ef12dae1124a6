//! The service's signals: SIGINT/SIGTERM (stop) and SIGHUP (reload), listened to from
//! the start of the process.
//!
//! A signal without a handler has its default action: SIGTERM and SIGHUP end the
//! process on the spot. [`Signals::listen`] installs the handlers before the config is
//! read and the stages start, so a signal that arrives while the service starts waits
//! in its stream until the service, once started, reads it: a stop asked during
//! start-up becomes a normal stop in data-flow order, a SIGHUP a reload.

#[cfg(unix)]
use std::io;

/// One stream per signal the service reacts to; reading one is cancel-safe (a signal
/// that arrived before a read, even before the first, is not lost).
pub struct Signals {
    #[cfg(unix)]
    interrupt: Stream,
    #[cfg(unix)]
    terminate: Stream,
    #[cfg(unix)]
    hangup: Stream,
}

/// A signal's stream, or why its handler could not be installed (logged on first read,
/// as logging is not set up when the handlers are installed).
#[cfg(unix)]
enum Stream {
    Listening(tokio::signal::unix::Signal),
    Failed(&'static str, Option<io::Error>),
}

#[cfg(unix)]
impl Stream {
    fn new(kind: tokio::signal::unix::SignalKind, name: &'static str) -> Stream {
        match tokio::signal::unix::signal(kind) {
            Ok(signal) => Stream::Listening(signal),
            Err(error) => Stream::Failed(name, Some(error)),
        }
    }

    /// Resolves when the signal arrives (never, when its handler could not be installed).
    async fn recv(&mut self) {
        match self {
            Stream::Listening(signal) => {
                if signal.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            Stream::Failed(name, error) => {
                if let Some(error) = error.take() {
                    tracing::error!(message = "Cannot listen for a signal.", signal = *name, %error);
                }
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Signals {
    /// Installs the handlers; call it inside the runtime (`Runtime::enter`), before anything slow.
    pub fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::SignalKind;
            Signals {
                interrupt: Stream::new(SignalKind::interrupt(), "SIGINT"),
                terminate: Stream::new(SignalKind::terminate(), "SIGTERM"),
                hangup: Stream::new(SignalKind::hangup(), "SIGHUP"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Resolves on SIGINT or SIGTERM, including one that arrived before this call.
    pub async fn shutdown(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(message = "Cannot listen for Ctrl-C.", %error);
            std::future::pending::<()>().await;
        }
    }

    /// The next signal, a stop before a reload when both are waiting.
    pub async fn next(&mut self) -> Received {
        #[cfg(unix)]
        {
            tokio::select! {
                biased;
                _ = self.interrupt.recv() => Received::Shutdown,
                _ = self.terminate.recv() => Received::Shutdown,
                _ = self.hangup.recv() => Received::Hangup,
            }
        }
        #[cfg(not(unix))]
        {
            self.shutdown().await;
            Received::Shutdown
        }
    }
}

/// What [`Signals::next`] received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGINT or SIGTERM: stop.
    Shutdown,
    /// SIGHUP: re-read the config.
    Hangup,
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A SIGHUP sent before anything reads the stream is still there to read: what a
    /// signal during start-up relies on.
    #[tokio::test]
    async fn a_signal_before_the_first_read_is_kept() {
        let mut signals = Signals::listen();
        // SAFETY: raise(3) sends SIGHUP to this process, whose handler was just installed.
        assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
        let received = tokio::time::timeout(std::time::Duration::from_secs(10), signals.next())
            .await
            .expect("the SIGHUP raised before the read");
        assert_eq!(received, Received::Hangup);
    }
}
