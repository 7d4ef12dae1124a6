//! The install routes of `deploy/` and the `Dockerfile`, checked with the tools their
//! users' machines use: the image's runtime stage built by podman from the binary
//! this build made (its filesystem exported and the binary run from it), the add-on
//! image on top of it, the compose file against the Compose Specification's JSON
//! schema, the Kubernetes manifests against Kubernetes' schemas, the systemd unit with
//! `systemd-analyze`, and the add-on's `config.yaml` against what the Supervisor
//! accepts. `scripts/test` installs podman, systemd-analyze, check-jsonschema and
//! kubernetes-validate (`scripts/need.sh`); a missing tool fails the test, naming it.
//! Each validator is also shown a broken copy, which it must refuse.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ha_ingestor::config::Config;
use regex::Regex;
use serde_yaml::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a tool; a tool that is not installed fails the test with how to get it.
fn tool(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} cannot run ({e}): scripts/test installs it (scripts/need.sh)")
        })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn podman(args: &[&str]) -> Output {
    let out = tool("podman", args);
    assert!(out.status.success(), "podman {args:?}: {}", text(&out));
    out
}

/// Removes the test's images however the test ends.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("podman").args(["rmi", "-f", tag]).output();
        }
    }
}

/// The shared libraries a dynamic binary loads (`ldd`), or none for a static one.
fn libraries_of(binary: &Path) -> Vec<PathBuf> {
    let out = tool("ldd", &[binary.to_str().unwrap()]);
    let listing = text(&out);
    if listing.contains("not a dynamic executable") || listing.contains("statically linked") {
        return Vec::new();
    }
    listing
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.trim().split(' ').next()?,
                None => line.trim().split(' ').next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The image's runtime stage (`--target runtime-local` of the `Dockerfile`), built from
/// the binary of this build: a debug binary, dynamically linked, so its libraries are
/// copied to their paths beside it. The image's filesystem, exported, runs `--version`
/// (as root through `chroot`, and as the image's user); its config has the user, the
/// health check, the port, the volume and the labels. Then the add-on's `Dockerfile`
/// builds on it, offline, as the Supervisor builds it on a device.
#[test]
fn the_runtime_image_and_the_addon_image_build_from_this_binary() {
    let binary = Path::new(env!("CARGO_BIN_EXE_ha-ingestor"));
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("context");
    let rootfs = context.join("rootfs");
    std::fs::create_dir_all(rootfs.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(context.join("data")).unwrap();
    std::fs::copy(binary, rootfs.join("usr/local/bin/ha-ingestor")).unwrap();
    let libraries = libraries_of(binary);
    for lib in &libraries {
        let to = rootfs.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
    }
    eprintln!(
        "image from {} ({}), {} libraries beside it",
        binary.display(),
        if libraries.is_empty() {
            "static"
        } else {
            "dynamic"
        },
        libraries.len()
    );

    let tag = format!("localhost/ha-ingestor-test:{}", std::process::id());
    let addon_tag = format!("localhost/ha-ingestor-addon-test:{}", std::process::id());
    let _images = Images(vec![addon_tag.clone(), tag.clone()]);
    let dockerfile = repo("Dockerfile");
    podman(&[
        "build",
        "--quiet",
        // No intermediate images left behind.
        "--layers=false",
        "--format",
        "docker",
        "--target",
        "runtime-local",
        "-f",
        dockerfile.to_str().unwrap(),
        "-t",
        &tag,
        context.to_str().unwrap(),
    ]);

    let inspect = podman(&["image", "inspect", &tag]);
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let image = &inspect[0];
    let config = &image["Config"];
    assert_eq!(config["User"], "65532:65532", "non-root: {config}");
    // podman shows the image's HEALTHCHECK at the top of its inspect output.
    assert_eq!(
        image["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/usr/local/bin/ha-ingestor", "health"])
    );
    assert!(config["ExposedPorts"]["9464/tcp"].is_object(), "{config}");
    assert!(config["Volumes"]["/data"].is_object(), "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/ha-ingestor"])
    );
    assert!(
        config["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "HA_INGESTOR_MONITOR__LISTEN=0.0.0.0:9464"),
        "{config}"
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.title"],
        "ha-ingestor"
    );
    eprintln!("runtime image size: {} bytes", image["Size"]);

    // The image's filesystem, as a container would see it.
    let created = podman(&["create", &tag]);
    let id = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let tar = dir.path().join("fs.tar");
    let export = tool("podman", &["export", "-o", tar.to_str().unwrap(), &id]);
    let _ = Command::new("podman").args(["rm", "-f", &id]).output();
    assert!(export.status.success(), "podman export: {}", text(&export));
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let untar = tool(
        "tar",
        &[
            "-x",
            "--same-owner",
            "-f",
            tar.to_str().unwrap(),
            "-C",
            root.to_str().unwrap(),
        ],
    );
    assert!(untar.status.success(), "tar: {}", text(&untar));
    let data = std::fs::metadata(root.join("data")).unwrap();
    assert_eq!(
        (data.uid(), data.gid()),
        (65532, 65532),
        "/data belongs to the image's user"
    );
    let bin_meta = std::fs::metadata(root.join("usr/local/bin/ha-ingestor")).unwrap();
    assert_eq!(
        bin_meta.uid(),
        0,
        "the binary is not the service user's to change"
    );

    let host = tool(binary.to_str().unwrap(), &["--version"]);
    for userspec in ["0:0", "65532:65532"] {
        let inside = tool(
            "chroot",
            &[
                &format!("--userspec={userspec}"),
                root.to_str().unwrap(),
                "/usr/local/bin/ha-ingestor",
                "--version",
            ],
        );
        assert!(
            inside.status.success(),
            "--version from the image's root filesystem as {userspec}: {}",
            text(&inside)
        );
        assert_eq!(inside.stdout, host.stdout);
    }

    // The add-on image: FROM the runtime image, as the Supervisor builds it (offline here).
    let addon_dir = repo("deploy/homeassistant-addon/ha_ingestor");
    podman(&[
        "build",
        "--quiet",
        // No intermediate images left behind.
        "--layers=false",
        "--format",
        "docker",
        "--build-arg",
        &format!("BUILD_FROM={tag}"),
        "-t",
        &addon_tag,
        addon_dir.to_str().unwrap(),
    ]);
    let inspect = podman(&["image", "inspect", &addon_tag]);
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["Cmd"], serde_json::json!(["addon"]));
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/ha-ingestor"])
    );
    assert_eq!(config["User"], "0:0", "the Supervisor's /data is root's");
    assert_eq!(config["Labels"]["io.hass.type"], "app");
    assert_eq!(
        config["Labels"]["io.hass.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        inspect[0]["Healthcheck"]["Test"].is_array(),
        "the health check is kept: {inspect}"
    );
}

/// `check-jsonschema` with the Compose Specification's schema (bundled in its package,
/// so offline), on the stack and on a broken copy; the stack's config loads.
#[test]
fn the_compose_file_follows_the_compose_specification() {
    let compose = repo("deploy/compose/compose.yaml");
    let validate = |file: &Path| {
        tool(
            "python3",
            &[
                "-m",
                "check_jsonschema",
                "--builtin-schema",
                "vendor.compose-spec",
                file.to_str().unwrap(),
            ],
        )
    };
    let out = validate(&compose);
    assert!(out.status.success(), "compose.yaml: {}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("compose.yaml");
    let original = std::fs::read_to_string(&compose).unwrap();
    std::fs::write(
        &broken,
        original.replace(
            "    restart: unless-stopped\n",
            "    restart_policy: always\n",
        ),
    )
    .unwrap();
    let out = validate(&broken);
    assert!(
        !out.status.success(),
        "the schema refuses an unknown key: {}",
        text(&out)
    );

    // What the stack mounts and names is there.
    let spec = yaml(&compose);
    let services = spec["services"].as_mapping().unwrap();
    for name in [
        "homeassistant",
        "mosquitto",
        "influxdb",
        "grafana",
        "prometheus",
        "ha-ingestor",
    ] {
        assert!(
            services.contains_key(Value::from(name)),
            "service {name} in the stack"
        );
    }
    assert!(
        spec["services"]["influxdb"]["image"]
            .as_str()
            .unwrap()
            .starts_with("influxdb:1.8")
    );
    for service in services.values() {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') {
                let path = repo("deploy/compose").join(source);
                assert!(path.exists(), "{source} is mounted but missing");
            }
        }
    }
    let env = std::fs::read_to_string(repo("deploy/compose/.env")).unwrap();
    assert!(env.lines().any(|l| l.starts_with("HA_TOKEN=")), "{env}");

    // The config it mounts is valid once the token comes from .env.
    let toml_path = repo("deploy/compose/ha-ingestor.toml");
    let text = std::fs::read_to_string(&toml_path).unwrap();
    let env = vec![(
        "HA_INGESTOR_HOMEASSISTANT__TOKEN".to_string(),
        "eyJ0eXAi".to_string(),
    )];
    let cfg = Config::from_toml_with_env(&text, &toml_path, &env).unwrap();
    assert_eq!(cfg.data_dir, Path::new("/data"));
    assert_eq!(cfg.monitor.listen.to_string(), "0.0.0.0:9464");
}

/// `kubernetes-validate --strict` (Kubernetes' own schemas, bundled) on every manifest
/// of the kustomization and on a broken copy; the CRD it cannot know, the
/// ServiceMonitor, is checked against the Service it selects; the ConfigMap's config loads.
#[test]
fn the_kubernetes_manifests_follow_kubernetes_schemas() {
    let dir = repo("deploy/kubernetes");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let resources: Vec<String> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        resources.iter().cloned().collect::<BTreeSet<_>>(),
        on_disk,
        "kustomization.yaml lists every manifest"
    );

    let mut args = vec!["-m", "kubernetes_validate", "--strict", "--no-warn"];
    let files: Vec<String> = resources
        .iter()
        .filter(|r| r.as_str() != "servicemonitor.yaml")
        .map(|r| dir.join(r).display().to_string())
        .collect();
    args.extend(files.iter().map(String::as_str));
    let out = tool("python3", &args);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).matches("passed for resource").count(),
        files.len(),
        "{}",
        text(&out)
    );

    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("statefulset.yaml");
    let original = std::fs::read_to_string(dir.join("statefulset.yaml")).unwrap();
    std::fs::write(
        &broken,
        original.replace("readOnlyRootFilesystem: true", "readOnlyRootFS: true"),
    )
    .unwrap();
    let out = tool(
        "python3",
        &[
            "-m",
            "kubernetes_validate",
            "--strict",
            broken.to_str().unwrap(),
        ],
    );
    assert!(
        !out.status.success(),
        "strict validation refuses an unknown field: {}",
        text(&out)
    );

    // The pod: one replica, probes on /health and /ready, locked down.
    let sts = yaml(&dir.join("statefulset.yaml"));
    assert_eq!(sts["spec"]["replicas"], Value::from(1));
    let pod = &sts["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::from(true));
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], Value::from(true));
    assert_eq!(sc["allowPrivilegeEscalation"], Value::from(false));
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"] == "/data" && m["name"] == "data"),
        "/data on the claim"
    );
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );

    // The ServiceMonitor selects the Service, on a port it has.
    let service = yaml(&dir.join("service.yaml"));
    let monitor = yaml(&dir.join("servicemonitor.yaml"));
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["kind"], "ServiceMonitor");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][k], v, "label {k:?}");
    }
    let port = &monitor["spec"]["endpoints"][0]["port"];
    assert!(
        service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| &p["name"] == port),
        "the Service has the port {port:?}"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    // The ConfigMap's config, with the Secret's token as the pod gets it.
    let configmap = yaml(&dir.join("configmap.yaml"));
    let text = configmap["data"]["ha-ingestor.toml"].as_str().unwrap();
    let env = vec![
        (
            "HA_INGESTOR_HOMEASSISTANT__TOKEN".to_string(),
            "t".to_string(),
        ),
        // What Kubernetes injects for a Service named ha-ingestor, were links on.
        (
            "HA_INGESTOR_SERVICE_HOST".to_string(),
            "10.96.0.17".to_string(),
        ),
        (
            "HA_INGESTOR_PORT_9464_TCP".to_string(),
            "tcp://10.96.0.17:9464".to_string(),
        ),
    ];
    let cfg = Config::from_toml_with_env(text, Path::new("/config/ha-ingestor.toml"), &env)
        .unwrap_or_else(|e| panic!("the ConfigMap's config: {e}"));
    assert_eq!(cfg.data_dir, Path::new("/data"));
    assert_eq!(cfg.homeassistant[0].token.as_deref(), Some("t"));
}

/// The sharded variant (`deploy/kubernetes/fleet`): every manifest passes
/// `kubernetes-validate --strict`; the replica count, the shard count and the
/// kustomization's `replicas` agree; a scaled-away replica's claim is kept; and the
/// shared config with the homes' ConfigMap, loaded as each pod would (its HOSTNAME,
/// the count from the environment), gives every home to exactly one replica.
#[test]
fn the_fleet_manifests_shard_the_homes_by_pod_ordinal() {
    let dir = repo("deploy/kubernetes/fleet");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let resources: BTreeSet<String> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    // The drain Job is run by hand, after a shrink, never applied with the rest.
    let by_hand: BTreeSet<String> = ["drain-job.yaml".to_string()].into();
    assert_eq!(
        resources,
        on_disk.difference(&by_hand).cloned().collect(),
        "kustomization.yaml lists every manifest but the drain Job"
    );
    let files: Vec<String> = on_disk
        .iter()
        .map(|r| dir.join(r).display().to_string())
        .collect();
    let mut args = vec!["-m", "kubernetes_validate", "--strict", "--no-warn"];
    args.extend(files.iter().map(String::as_str));
    let out = tool("python3", &args);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).matches("passed for resource").count(),
        files.len(),
        "{}",
        text(&out)
    );

    let sts = yaml(&dir.join("statefulset.yaml"));
    let replicas = sts["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(
        kustomization["replicas"][0]["count"].as_u64(),
        Some(replicas),
        "kustomization replicas = StatefulSet replicas"
    );
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    let count = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "HA_INGESTOR_SHARD__COUNT")
        .and_then(|e| e["value"].as_str())
        .expect("HA_INGESTOR_SHARD__COUNT in the pod");
    assert_eq!(count, replicas.to_string(), "shard count = replicas");
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
        "Retain"
    );
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");

    // The config as each pod loads it: the homes folder and tokens where the pod mounts them.
    let config = yaml(&dir.join("configmap.yaml"));
    let homes = yaml(&dir.join("homes.yaml"));
    let secret = yaml(&dir.join("secret.yaml"));
    let tmp = tempfile::tempdir().unwrap();
    let (homes_dir, tokens) = (tmp.path().join("homes.d"), tmp.path().join("tokens"));
    std::fs::create_dir_all(&homes_dir).unwrap();
    std::fs::create_dir_all(&tokens).unwrap();
    let mut names = BTreeSet::new();
    for (file, body) in homes["data"].as_mapping().unwrap() {
        let file = file.as_str().unwrap();
        let body = body
            .as_str()
            .unwrap()
            .replace("/secrets/homes", tokens.to_str().unwrap());
        std::fs::write(homes_dir.join(file), body).unwrap();
        names.insert(file.trim_end_matches(".toml").to_string());
    }
    for (key, token) in secret["stringData"].as_mapping().unwrap() {
        std::fs::write(tokens.join(key.as_str().unwrap()), token.as_str().unwrap()).unwrap();
    }
    let text = config["data"]["ha-ingestor.toml"]
        .as_str()
        .unwrap()
        .replace("\"/homes.d\"", &format!("{:?}", homes_dir));
    let mut owned = Vec::new();
    for ordinal in 0..replicas {
        let env = vec![
            ("HA_INGESTOR_SHARD__COUNT".to_string(), count.to_string()),
            ("HOSTNAME".to_string(), format!("ha-ingestor-{ordinal}")),
        ];
        let cfg = Config::from_toml_with_env(&text, Path::new("/config/ha-ingestor.toml"), &env)
            .unwrap_or_else(|e| panic!("pod {ordinal}'s config: {e}"));
        assert_eq!(cfg.homeassistant.len(), names.len());
        owned.extend(cfg.owned_homes().map(|h| h.name.clone()));
    }
    owned.sort();
    assert_eq!(
        owned,
        names.into_iter().collect::<Vec<_>>(),
        "each home runs on exactly one pod"
    );

    // The drain Job mounts what the pod mounts, and the claim of a removed ordinal.
    let job = yaml(&dir.join("drain-job.yaml"));
    let job_pod = &job["spec"]["template"]["spec"];
    assert_eq!(job_pod["containers"][0]["args"][0], "buffer");
    assert_eq!(job_pod["containers"][0]["args"][1], "drain");
    assert_eq!(
        job_pod["containers"][0]["volumeMounts"], container["volumeMounts"],
        "the Job sees the pod's files"
    );
    assert!(
        job_pod["volumes"].as_sequence().unwrap().iter().any(|v| {
            v["persistentVolumeClaim"]["claimName"]
                .as_str()
                .is_some_and(|c| c.starts_with("data-ha-ingestor-"))
        }),
        "the Job mounts a replica's claim"
    );
}

/// `systemd-analyze verify` on the unit (its binary path pointed at this build's
/// binary, which it checks exists) says nothing; a misspelt key is reported; and the
/// offline security review rates its exposure low.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(repo("deploy/systemd/ha-ingestor.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=ha-ingestor",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has {line}");
    }
    let dir = tempfile::tempdir().unwrap();
    let here = unit.replace(
        "/usr/local/bin/ha-ingestor",
        env!("CARGO_BIN_EXE_ha-ingestor"),
    );
    let path = dir.path().join("ha-ingestor.service");
    std::fs::write(&path, &here).unwrap();
    let verify = |p: &Path| {
        tool(
            "systemd-analyze",
            &["verify", "--man=no", p.to_str().unwrap()],
        )
    };
    let out = verify(&path);
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );

    let broken_dir = dir.path().join("broken");
    std::fs::create_dir_all(&broken_dir).unwrap();
    let broken = broken_dir.join("ha-ingestor.service");
    std::fs::write(&broken, here.replace("ProtectSystem=", "ProtectSystm=")).unwrap();
    let out = verify(&broken);
    assert!(
        text(&out).contains("ProtectSystm"),
        "a misspelt key is reported: {}",
        text(&out)
    );

    let out = tool(
        "systemd-analyze",
        &["security", "--offline=yes", path.to_str().unwrap()],
    );
    let report = text(&out);
    let level: f64 = Regex::new(r"Overall exposure level for \S+: ([0-9.]+)")
        .unwrap()
        .captures(&report)
        .and_then(|c| c[1].parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}"));
    eprintln!("systemd-analyze security exposure: {level}");
    assert!(
        level <= 2.0,
        "exposure {level} (0 best, 10 worst): {report}"
    );
}

/// The add-on repository against the keys and types the Supervisor accepts
/// (`supervisor/apps/validate.py`, `apps/options.py`, `store/validate.py`), including
/// the unknown keys it would silently drop.
#[test]
fn the_addon_repository_is_what_the_supervisor_accepts() {
    let root = repo("deploy/homeassistant-addon");
    let repository = yaml(&root.join("repository.yaml"));
    let repo_keys: BTreeSet<&str> = repository
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(repo_keys.contains("name"));
    assert!(repo_keys.is_subset(&BTreeSet::from(["name", "url", "maintainer"])));
    assert!(repository["name"].as_str().is_some_and(|n| !n.is_empty()));

    // The store loads every config.{yaml,yml,json} below the repository as an add-on.
    let mut manifests = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.file_name().and_then(|n| n.to_str()),
                Some("config.yaml" | "config.yml" | "config.json")
            ) {
                manifests.push(p);
            }
        }
    }
    assert_eq!(manifests, [root.join("ha_ingestor/config.yaml")]);

    let addon = root.join("ha_ingestor");
    let config = yaml(&addon.join("config.yaml"));
    let errors = supervisor_errors(&config);
    assert!(errors.is_empty(), "config.yaml: {errors:#?}");
    assert_eq!(config["version"], env!("CARGO_PKG_VERSION"));

    // A config.yaml with typical mistakes is refused by the same check.
    let mut broken = config.clone();
    let m = broken.as_mapping_mut().unwrap();
    m.insert("ingres".into(), true.into());
    m.insert("startup".into(), "after_core".into());
    m.insert("timeout".into(), 5.into());
    m.insert("watchdog".into(), "http://localhost:9464/health".into());
    let errors = supervisor_errors(&broken);
    for key in ["ingres", "startup", "timeout", "watchdog"] {
        assert!(
            errors.iter().any(|e| e.starts_with(key)),
            "{key} is refused: {errors:#?}"
        );
    }

    // Translations name exactly the options and the ports.
    let tr = yaml(&addon.join("translations/en.yaml"));
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_mapping()
            .map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(&tr["configuration"]), keys(&config["schema"]));
    assert_eq!(keys(&tr["network"]), keys(&config["ports"]));
    for (key, entry) in tr["configuration"].as_mapping().unwrap() {
        assert!(entry["name"].is_string(), "{key:?} has a name");
    }

    // The files beside it, and an icon that is a square PNG.
    for f in ["Dockerfile", "DOCS.md", "README.md"] {
        assert!(addon.join(f).is_file(), "{f}");
    }
    let icon = std::fs::read(addon.join("icon.png")).unwrap();
    assert_eq!(&icon[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(icon[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(icon[20..24].try_into().unwrap());
    assert_eq!((width, height), (128, 128));
    let dockerfile = std::fs::read_to_string(addon.join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("ha-ingestor:{}", env!("CARGO_PKG_VERSION"))),
        "the add-on builds on the image of its own version"
    );
}

/// Whether a value of `config.yaml` is valid for its key.
type ValueCheck<'a> = dyn Fn(&Value) -> bool + 'a;

/// What the Supervisor would reject or drop in an add-on's `config.yaml`, one line per problem, starting with the key.
fn supervisor_errors(config: &Value) -> Vec<String> {
    const BOOLS: &[&str] = &[
        "init",
        "ingress",
        "ingress_stream",
        "panel_admin",
        "homeassistant_api",
        "hassio_api",
        "auth_api",
        "docker_api",
        "host_network",
        "host_pid",
        "host_ipc",
        "host_uts",
        "host_dbus",
        "apparmor",
        "full_access",
        "audio",
        "video",
        "gpio",
        "usb",
        "uart",
        "udev",
        "devicetree",
        "kernel_modules",
        "realtime",
        "stdin",
        "legacy",
        "tmpfs",
        "journald",
    ];
    const OTHERS: &[&str] = &[
        "name",
        "version",
        "slug",
        "description",
        "arch",
        "machine",
        "url",
        "image",
        "startup",
        "boot",
        "stage",
        "hassio_role",
        "services",
        "ingress_port",
        "ingress_entry",
        "panel_icon",
        "panel_title",
        "webui",
        "watchdog",
        "ports",
        "ports_description",
        "map",
        "timeout",
        "backup",
        "backup_exclude",
        "backup_pre",
        "backup_post",
        "options",
        "schema",
        "environment",
        "privileged",
        "devices",
        "discovery",
        "homeassistant",
        "breaking_versions",
        "translations",
    ];
    let mut errors = Vec::new();
    let Some(map) = config.as_mapping() else {
        return vec!["(root): not a mapping".into()];
    };
    let str_of = |key: &str| config[key].as_str();
    for (key, _) in map {
        let key = key.as_str().unwrap_or("");
        if !BOOLS.contains(&key) && !OTHERS.contains(&key) {
            errors.push(format!(
                "{key}: unknown key (the Supervisor drops it silently)"
            ));
        }
    }
    for key in ["name", "version", "slug", "description"] {
        if str_of(key).is_none_or(str::is_empty) {
            errors.push(format!("{key}: required, a non-empty string"));
        }
    }
    if !str_of("slug").is_some_and(|s| Regex::new(r"^[-_.A-Za-z0-9]+$").unwrap().is_match(s)) {
        errors.push("slug: must match [-_.A-Za-z0-9]+".into());
    }
    match config["arch"].as_sequence() {
        Some(archs) if !archs.is_empty() => {
            for a in archs {
                if !matches!(a.as_str(), Some("aarch64" | "amd64")) {
                    errors.push(format!(
                        "arch: {a:?} is not a supported architecture (aarch64, amd64)"
                    ));
                }
            }
        }
        _ => errors.push("arch: required, a list".into()),
    }
    let one_of = |key: &str, allowed: &[&str], errors: &mut Vec<String>| {
        if !config[key].is_null() && !config[key].as_str().is_some_and(|v| allowed.contains(&v)) {
            errors.push(format!("{key}: one of {allowed:?}"));
        }
    };
    one_of(
        "startup",
        &["initialize", "system", "services", "application", "once"],
        &mut errors,
    );
    one_of("boot", &["auto", "manual", "manual_only"], &mut errors);
    one_of(
        "stage",
        &["stable", "experimental", "deprecated"],
        &mut errors,
    );
    one_of("backup", &["hot", "cold"], &mut errors);
    one_of(
        "hassio_role",
        &["default", "homeassistant", "backup", "manager", "admin"],
        &mut errors,
    );
    for key in BOOLS {
        if !config[*key].is_null() && !config[*key].is_bool() {
            errors.push(format!("{key}: a boolean"));
        }
    }
    let image_part = Regex::new(r"^[a-z0-9{][a-z0-9.\-_{}]*$").unwrap();
    let watchdog =
        Regex::new(r"^(?:https?|\[PROTO:\w+\]|tcp)://\[HOST\]:(?:\[PORT:\d+\]|\d+).*$").unwrap();
    // Optional keys with a rule for their value: (key, whether the value is valid, what it must be).
    let rules: [(&str, &ValueCheck, &str); 5] = [
        (
            "url",
            &|v| {
                v.as_str()
                    .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"))
            },
            "a URL",
        ),
        (
            "image",
            &|v| {
                v.as_str().is_some_and(|i| {
                    let last = i.rsplit('/').next().unwrap_or("");
                    !last.contains(':') && i.split('/').all(|p| image_part.is_match(p))
                })
            },
            "registry/name, lower case, no tag",
        ),
        (
            "ingress_port",
            &|v| v.as_u64().is_some_and(|p| p <= 65535),
            "0 or 1–65535",
        ),
        (
            "timeout",
            &|v| v.as_u64().is_some_and(|t| (10..=300).contains(&t)),
            "10–300 seconds",
        ),
        (
            "watchdog",
            &|v| v.as_str().is_some_and(|w| watchdog.is_match(w)),
            "http://[HOST]:[PORT:n]/path",
        ),
    ];
    for (key, valid, what) in rules {
        if config.get(key).is_some_and(|v| !valid(v)) {
            errors.push(format!("{key}: {what}"));
        }
    }
    if config
        .get("panel_icon")
        .is_some_and(|v| !v.as_str().is_some_and(|i| i.starts_with("mdi:")))
    {
        errors.push("panel_icon: mdi:<name>".into());
    }
    let service = Regex::new(r"^(?:mqtt|mysql):(?:provide|want|need)$").unwrap();
    for s in config["services"].as_sequence().into_iter().flatten() {
        if !s.as_str().is_some_and(|s| service.is_match(s)) {
            errors.push(format!(
                "services: {s:?} is not mqtt|mysql:provide|want|need"
            ));
        }
    }
    let port_key = Regex::new(r"^\d+(?:/tcp|/udp)?$").unwrap();
    let ports = config["ports"].as_mapping().cloned().unwrap_or_default();
    for (k, v) in &ports {
        if !k.as_str().is_some_and(|k| port_key.is_match(k)) {
            errors.push(format!("ports: key {k:?} is not <port>[/tcp|/udp]"));
        }
        if !(v.is_null() || v.as_u64().is_some_and(|p| (1..=65535).contains(&p))) {
            errors.push(format!("ports: {k:?} maps to null or 1–65535"));
        }
    }
    for (k, _) in config["ports_description"]
        .as_mapping()
        .into_iter()
        .flatten()
    {
        if !ports.contains_key(k) {
            errors.push(format!("ports_description: {k:?} is not in ports"));
        }
    }
    let map_types = [
        "data",
        "ssl",
        "share",
        "media",
        "backup",
        "homeassistant_config",
        "app_config",
        "all_app_configs",
        "local_apps",
    ];
    for m in config["map"].as_sequence().into_iter().flatten() {
        let kind = match m {
            Value::String(s) => s.split(':').next().unwrap_or(""),
            other => other["type"].as_str().unwrap_or(""),
        };
        if !map_types.contains(&kind) {
            errors.push(format!("map: {m:?} is not a current folder type"));
        }
    }
    // Options and their schema (apps/options.py).
    let element = Regex::new(
        r"^(?:bool|email|url|port|device(?:\(subsystem=[a-z]+\))?|str(?:\(\d*,\d*\))?|password(?:\(\d*,\d*\))?|int(?:\(\d*,\d*\))?|float(?:\([\d.]*,[\d.]*\))?|match\(.*\)|list\(.+\))\??$",
    )
    .unwrap();
    let options = config["options"].as_mapping().cloned().unwrap_or_default();
    let Some(schema) = config["schema"].as_mapping() else {
        errors.push("schema: a mapping of option types".into());
        return errors;
    };
    let check_element = |key: &str, t: &Value, errors: &mut Vec<String>| match t {
        Value::String(s) if element.is_match(s) => {}
        Value::Mapping(m) => {
            for (k, v) in m {
                if !v.as_str().is_some_and(|s| element.is_match(s)) {
                    errors.push(format!("schema: {key}.{k:?} has an invalid type {v:?}"));
                }
            }
        }
        other => errors.push(format!("schema: {key} has an invalid type {other:?}")),
    };
    for (k, t) in schema {
        let key = k.as_str().unwrap_or("");
        match t {
            Value::Sequence(items) if items.len() == 1 => {
                check_element(key, &items[0], &mut errors)
            }
            Value::Sequence(_) => errors.push(format!("schema: {key}: a list holds one element")),
            other => check_element(key, other, &mut errors),
        }
        let optional = t.as_str().is_some_and(|s| s.ends_with('?'));
        if !optional
            && !matches!(t, Value::Sequence(_))
            && options.get(k).is_none_or(Value::is_null)
        {
            errors.push(format!(
                "schema: {key} is required but has no default in options"
            ));
        }
        if let (Some(s), Some(v)) = (t.as_str(), options.get(k)) {
            let ok = match s.trim_end_matches('?') {
                "bool" => v.is_bool(),
                l if l.starts_with("list(") => v.as_str().is_some_and(|v| {
                    l.trim_start_matches("list(")
                        .trim_end_matches(')')
                        .split('|')
                        .any(|a| a == v)
                }),
                _ => v.is_string(),
            };
            if !ok {
                errors.push(format!("options: {key} = {v:?} does not fit {s}"));
            }
        }
    }
    for (k, _) in &options {
        if !schema.contains_key(k) {
            errors.push(format!(
                "options: {k:?} is not in schema (the Supervisor drops it)"
            ));
        }
    }
    errors
}
