//! A private `mosquitto` per test on a free loopback port, with a generated config,
//! optional password file, TLS certificates and persistence; stopped on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long mosquitto may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What the private broker should do besides listening on loopback.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Keep the session store on disk (`persistence true`), so a restart keeps sessions and queued messages.
    pub persistence: bool,
    /// Users and passwords; non-empty turns anonymous access off.
    pub users: Vec<(String, String)>,
    /// Serve TLS with a generated CA and server certificate.
    pub tls: bool,
    /// With `tls`: require a client certificate signed by the generated CA.
    pub require_client_cert: bool,
    /// `max_inflight_messages` (v3.1.1 clients; mosquitto's default is 20).
    pub max_inflight_messages: Option<u32>,
    /// `max_queued_messages` (mosquitto's default is 1000).
    pub max_queued_messages: Option<u32>,
}

/// Files of the generated certificates (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the server and the client certificate.
    pub ca: PathBuf,
    /// A client certificate for `require_client_cert`.
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
}

/// A running private mosquitto; killed and cleaned up on drop.
pub struct Mosquitto {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    tls: Option<TlsFiles>,
}

impl Mosquitto {
    /// Starts a broker with `settings` on a free port and waits until it accepts connections.
    pub fn start(settings: Settings) -> Mosquitto {
        let dir = tempfile::tempdir().expect("temp dir for mosquitto");
        // Started as root, mosquitto drops to its own user: it must still write its log and store here.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("open the broker's folder");
        }
        let port = free_port();
        let tls = settings.tls.then(|| generate_certs(dir.path()));
        write_config(dir.path(), port, &settings);
        let mut m = Mosquitto {
            child: None,
            dir,
            port,
            tls,
        };
        m.spawn();
        m
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated certificates, with `tls`.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Stops the broker gracefully (SIGTERM: with persistence it saves its sessions) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM by the id of the process this test started: mosquitto saves its state.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }

    /// Starts it again on the same port with the same config and data (after [`Mosquitto::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The broker's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("mosquitto exited ({status}); its log:\n{}", self.log());
            }
            if Instant::now() >= deadline {
                panic!(
                    "mosquitto did not listen on {addr} within {START_TIMEOUT:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn mosquitto_binary() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("mosquitto not found: install the mosquitto package (scripts/test does)");
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn write_config(dir: &Path, port: u16, s: &Settings) {
    let mut conf = String::new();
    conf.push_str(&format!("listener {port} 127.0.0.1\n"));
    conf.push_str(&format!(
        "log_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n",
        dir.join("mosquitto.log").display()
    ));
    if s.persistence {
        conf.push_str(&format!(
            "persistence true\npersistence_location {}/\nautosave_interval 1\n",
            dir.display()
        ));
    } else {
        conf.push_str("persistence false\n");
    }
    if let Some(n) = s.max_inflight_messages {
        conf.push_str(&format!("max_inflight_messages {n}\n"));
    }
    if let Some(n) = s.max_queued_messages {
        conf.push_str(&format!("max_queued_messages {n}\n"));
    }
    if s.users.is_empty() {
        conf.push_str("allow_anonymous true\n");
    } else {
        let file = dir.join("passwords");
        std::fs::write(&file, "").expect("create password file");
        for (user, password) in &s.users {
            let status = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&file)
                .arg(user)
                .arg(password)
                .status()
                .expect("run mosquitto_passwd");
            assert!(status.success(), "mosquitto_passwd failed");
        }
        {
            use std::os::unix::fs::PermissionsExt;
            // Readable by the user mosquitto drops to.
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
                .expect("password file permissions");
        }
        conf.push_str(&format!(
            "allow_anonymous false\npassword_file {}\n",
            file.display()
        ));
    }
    if s.tls {
        conf.push_str(&format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            dir.join("ca.pem").display(),
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        ));
        if s.require_client_cert {
            conf.push_str("require_certificate true\n");
        }
    }
    std::fs::write(dir.join("mosquitto.conf"), conf).expect("write mosquitto.conf");
}

/// A CA, a server certificate for `localhost`/127.0.0.1 and a client certificate, as PEM files in `dir`.
fn generate_certs(dir: &Path) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ha-ingestor test CA");
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

    let server_params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let mut server_params = server_params;
    server_params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let server_key = KeyPair::generate().expect("server key");
    let server = server_params
        .signed_by(&server_key, &ca)
        .expect("server certificate");

    let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ha-ingestor-client");
    let client_key = KeyPair::generate().expect("client key");
    let client = client_params
        .signed_by(&client_key, &ca)
        .expect("client certificate");

    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    std::fs::write(&files.ca, ca.pem()).expect("write CA");
    std::fs::write(dir.join("server.pem"), server.pem()).expect("write server cert");
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("write server key");
    std::fs::write(&files.client_cert, client.pem()).expect("write client cert");
    std::fs::write(&files.client_key, client_key.serialize_pem()).expect("write client key");
    files
}
