//! `ha-ingestor buffer inspect|drain`: what a stopped service left in its buffer
//! is shown, then delivered to the configured sink (here the file sink).

use std::process::Command;

use ha_ingestor::config::BufferConfig;
use ha_ingestor::encode::Chunk;
use ha_ingestor::sink::buffer::Buffer;

fn run(args: &[&str], config: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_shows_and_drain_delivers_the_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, format!("data_dir = {data:?}\n")).expect("config");
    let lines = [
        "m,entity_id=a value=1 1700000000000000000\n",
        "m,entity_id=b value=2 1700000000000000001\nm,entity_id=c value=3 1700000000000000002\n",
    ];
    {
        let (buffer, _) =
            Buffer::open(&data.join("buffer"), &BufferConfig::default()).expect("buffer");
        for text in lines {
            buffer
                .append(&Chunk {
                    lines: text.to_string(),
                    points: text.lines().count(),
                    seq: None,
                    marks: Default::default(),
                })
                .expect("append");
        }
    }

    let (ok, stdout, stderr) = run(&["buffer", "inspect"], &config);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("2 records, 3 points"), "{stdout}");
    assert!(stdout.contains("oldest: sequence 1"), "{stdout}");

    let (ok, stdout, stderr) = run(&["buffer", "drain"], &config);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("3 points written"), "{stdout}");
    assert!(stdout.contains("0 records (0 points) left"), "{stdout}");
    let mut written = Vec::new();
    for entry in std::fs::read_dir(data.join("points")).expect("points dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("file");
        written.extend(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    let expected: Vec<String> = lines
        .iter()
        .flat_map(|t| t.lines().map(str::to_string))
        .collect();
    assert_eq!(written, expected);

    let (ok, stdout, _) = run(&["buffer", "inspect"], &config);
    assert!(ok);
    assert!(stdout.contains("0 records, 0 points"), "{stdout}");
}
