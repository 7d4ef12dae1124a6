//! `ha-ingestor health`: asks the running service's monitor for `/health`; the
//! container image's `HEALTHCHECK`, which has no `curl` to call (the image holds the binary alone).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `health`.
#[derive(clap::Args)]
pub struct Args {
    /// The monitor's address (`monitor.listen`; a wildcard address is asked on loopback).
    #[arg(long, default_value = "127.0.0.1:9464")]
    addr: SocketAddr,
    /// The path to ask.
    #[arg(long, default_value = "/health")]
    path: String,
    /// Longest wait for the connection and for the answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Exit 0 when the answer's status is 2xx, 1 otherwise (with the reason on stderr).
pub fn main(args: Args) -> ExitCode {
    match status(&args) {
        Ok(code) if (200..300).contains(&code) => ExitCode::SUCCESS,
        Ok(code) => {
            eprintln!("ha-ingestor health: {} answered {code}", args.path);
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("ha-ingestor health: {}: {error}", args.addr);
            ExitCode::FAILURE
        }
    }
}

/// The HTTP status of `GET path`, over HTTP/1.0 so the answer ends with the connection.
fn status(args: &Args) -> std::io::Result<u16> {
    let mut addr = args.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let mut stream = TcpStream::connect_timeout(&addr, args.timeout)?;
    stream.set_read_timeout(Some(args.timeout))?;
    stream.set_write_timeout(Some(args.timeout))?;
    write!(
        stream,
        "GET {} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: ha-ingestor-health\r\n\r\n",
        args.path
    )?;
    // The status line is all we need; 512 bytes hold it.
    let mut head = [0u8; 512];
    let mut len = 0;
    while len < head.len() {
        let n = stream.read(&mut head[len..])?;
        if n == 0 || head[..len + n].contains(&b'\n') {
            len += n;
            break;
        }
        len += n;
    }
    parse_status(&head[..len]).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "the answer is not HTTP")
    })
}

/// The status code of an `HTTP/1.x NNN …` status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_status;

    #[test]
    fn reads_the_status_of_an_http_answer_and_nothing_else() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"),
            Some(200)
        );
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }
}
