//! The deployment artefacts under deploy/ are checked here because no Docker
//! engine or Kubernetes cluster is available to try them: every manifest must
//! parse, keep its safety invariants, and carry an environment that pgrelay's
//! own config loader accepts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgrelay::auth::Userlist;
use pgrelay::config::{AuthType, Config, PoolMode, SslMode};
use serde::Deserialize;
use serde_yaml_ng::Value;

const LISTEN_PORT: i64 = 6432;
const METRICS_PORT: i64 = 9127;
const NON_ROOT_UID: i64 = 10001;

use common::deployment::DEPLOYMENT_ENV as REQUIRED_ENV;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every YAML document of every file under deploy/kubernetes, by file name.
fn manifests() -> BTreeMap<String, Vec<Value>> {
    let dir = deploy_dir().join("kubernetes");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".yaml"),
            "{name}: only .yaml files belong in deploy/kubernetes"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}")))
            .filter(|doc| !doc.is_null())
            .collect();
        assert!(!docs.is_empty(), "{name} has no document");
        out.insert(name, docs);
    }
    out
}

/// The single object of `kind` across all manifests.
fn object(kind: &str) -> Value {
    only(kind, |_| true)
}

/// The single object of `kind` called `name`.
fn named(kind: &str, name: &str) -> Value {
    only(kind, |d| d["metadata"]["name"].as_str() == Some(name))
}

fn only(kind: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let found: Vec<Value> = manifests()
        .into_values()
        .flatten()
        .filter(|d| d["kind"].as_str() == Some(kind) && wanted(d))
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one such {kind}");
    found.into_iter().next().unwrap()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} should be a string, is {v:?}"))
}

fn int_of(v: &Value, what: &str) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("{what} should be an integer, is {v:?}"))
}

fn seq<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what} should be a list, is {v:?}"))
}

fn pod_spec(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]
}

fn container(deployment: &Value) -> &Value {
    let containers = seq(&pod_spec(deployment)["containers"], "containers");
    assert_eq!(containers.len(), 1, "one pgrelay container");
    &containers[0]
}

/// The container's environment; values must be literal strings (Kubernetes
/// rejects unquoted numbers, and a valueFrom would hide the value from this test).
fn env_map(deployment: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for var in seq(&container(deployment)["env"], "env") {
        let name = str_of(&var["name"], "env name").to_string();
        let value = str_of(&var["value"], &name).to_string();
        assert!(env.insert(name.clone(), value).is_none(), "{name} twice");
    }
    env
}

/// Container port number for a port given by name or number.
fn port_number(deployment: &Value, port: &Value) -> i64 {
    if let Some(n) = port.as_i64() {
        return n;
    }
    let name = str_of(port, "port");
    seq(&container(deployment)["ports"], "ports")
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .map(|p| int_of(&p["containerPort"], name))
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// `--config PATH` from the container args.
fn config_arg(deployment: &Value) -> String {
    let args: Vec<&str> = seq(&container(deployment)["args"], "args")
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    args[at + 1].to_string()
}

/// The volume mounted at the directory holding `file`, and the item path of `file` in it.
fn volume_for_file<'a>(deployment: &'a Value, file: &str) -> (&'a Value, String) {
    let mount = seq(&container(deployment)["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| {
            let dir = str_of(&m["mountPath"], "mountPath");
            file.starts_with(&format!("{}/", dir.trim_end_matches('/')))
        })
        .unwrap_or_else(|| panic!("nothing mounted above {file}"));
    assert_eq!(
        mount["readOnly"].as_bool(),
        Some(true),
        "{file} mount read-only"
    );
    let dir = str_of(&mount["mountPath"], "mountPath").trim_end_matches('/');
    let relative = file[dir.len() + 1..].to_string();
    let volume_name = str_of(&mount["name"], "mount name");
    let volume = seq(&pod_spec(deployment)["volumes"], "volumes")
        .iter()
        .find(|v| v["name"].as_str() == Some(volume_name))
        .unwrap_or_else(|| panic!("no volume {volume_name}"));
    (volume, relative)
}

/// The key a Secret/ConfigMap volume projects to `relative`.
fn projected_key(source: &Value, relative: &str) -> String {
    match source["items"].as_sequence() {
        Some(items) => items
            .iter()
            .find(|i| i["path"].as_str() == Some(relative))
            .map(|i| str_of(&i["key"], "item key").to_string())
            .unwrap_or_else(|| panic!("no item projected to {relative}")),
        None => relative.to_string(),
    }
}

#[test]
fn every_manifest_parses_and_names_itself() {
    let all = manifests();
    for (file, docs) in &all {
        for doc in docs {
            assert!(doc["apiVersion"].as_str().is_some(), "{file}: apiVersion");
            assert!(doc["kind"].as_str().is_some(), "{file}: kind");
            if doc["kind"].as_str() != Some("Kustomization") {
                assert!(doc["metadata"]["name"].as_str().is_some(), "{file}: name");
            }
        }
    }
    let kustomization = object("Kustomization");
    let listed: BTreeSet<&str> = seq(&kustomization["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "resource"))
        .collect();
    let files: BTreeSet<&str> = all
        .keys()
        .map(String::as_str)
        .filter(|f| *f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, files, "kustomization.yaml lists every manifest");
}

#[test]
fn deployment_runs_replicated_and_locked_down() {
    let d = object("Deployment");
    assert!(int_of(&d["spec"]["replicas"], "replicas") >= 2);
    let pod = pod_spec(&d);
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        int_of(&pod["securityContext"]["runAsUser"], "runAsUser"),
        NON_ROOT_UID
    );
    let c = container(&d);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    let dropped: Vec<&str> = seq(&sc["capabilities"]["drop"], "drop")
        .iter()
        .map(|c| str_of(c, "capability"))
        .collect();
    assert_eq!(dropped, ["ALL"]);
    assert!(
        sc["capabilities"]["add"].is_null(),
        "no capability added back"
    );
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !c["resources"][kind][resource].is_null(),
                "resources.{kind}.{resource}"
            );
        }
    }
    // The pod template's labels must be selected by the Deployment itself.
    let selector = d["spec"]["selector"]["matchLabels"].as_mapping().unwrap();
    for (k, v) in selector {
        assert_eq!(&pod_labels(&d)[k], v);
    }
}

fn pod_labels(d: &Value) -> &Value {
    &d["spec"]["template"]["metadata"]["labels"]
}

#[test]
fn deployment_exposes_and_probes_both_ports() {
    let d = object("Deployment");
    let c = container(&d);
    let ports: BTreeSet<i64> = seq(&c["ports"], "ports")
        .iter()
        .map(|p| int_of(&p["containerPort"], "containerPort"))
        .collect();
    assert_eq!(ports, BTreeSet::from([LISTEN_PORT, METRICS_PORT]));

    let readiness = &c["readinessProbe"];
    let liveness = &c["livenessProbe"];
    let probed: BTreeSet<i64> = [readiness, liveness]
        .into_iter()
        .map(|probe| {
            let port = if !probe["tcpSocket"].is_null() {
                &probe["tcpSocket"]["port"]
            } else {
                assert_eq!(probe["httpGet"]["path"].as_str(), Some("/healthz"));
                &probe["httpGet"]["port"]
            };
            port_number(&d, port)
        })
        .collect();
    assert!(probed.is_subset(&BTreeSet::from([LISTEN_PORT, METRICS_PORT])));
    assert!(!probed.is_empty());
}

#[test]
fn deployment_env_has_the_pgbouncer_set_and_loads() {
    let d = object("Deployment");
    let env = env_map(&d);
    for (name, value) in REQUIRED_ENV {
        assert_eq!(env.get(*name).map(String::as_str), Some(*value), "{name}");
    }
    let cfg = Config::load(None, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listen.port, LISTEN_PORT as u16);
    assert_eq!(
        cfg.metrics.addr.map(|a| a.port()),
        Some(METRICS_PORT as u16)
    );
    assert_eq!(cfg.auth.auth_type, AuthType::Plain);
    assert_eq!(cfg.pool.pool_mode, PoolMode::Session);
    assert_eq!(cfg.pool.default_pool_size, 50);
    assert_eq!(cfg.limits.max_client_conn, 1000);
    assert_eq!(cfg.server_tls.sslmode, SslMode::Require);
    let any = cfg
        .database("whatever_the_client_asks")
        .expect("a database");
    assert_eq!(any.host, "postgres-primary");
    assert_eq!(any.port, 5432);
}

#[test]
fn the_config_map_loads_together_with_the_env() {
    let d = object("Deployment");
    let path = config_arg(&d);
    let (volume, relative) = volume_for_file(&d, &path);
    let map_name = str_of(&volume["configMap"]["name"], "configMap name");
    let key = projected_key(&volume["configMap"], &relative);
    let map = object("ConfigMap");
    assert_eq!(map["metadata"]["name"].as_str(), Some(map_name));
    let yaml = str_of(&map["data"][key.as_str()], &key);

    let cfg = Config::load_from_str(Path::new(&path), yaml, &env_map(&d))
        .unwrap_or_else(|e| panic!("{e}"));
    let app = cfg.database("app").expect("the ConfigMap's app database");
    assert_eq!(app.dbname, "app");
    // The env's `*` entry still catches every other name.
    assert_eq!(cfg.database("other").unwrap().host, "postgres-primary");
}

#[test]
fn userlist_secret_is_mounted_where_auth_file_points() {
    let d = object("Deployment");
    let auth_file = env_map(&d)["PGBOUNCER_AUTH_FILE"].clone();
    let (volume, relative) = volume_for_file(&d, &auth_file);
    let secret_name = str_of(&volume["secret"]["secretName"], "secretName");
    let key = projected_key(&volume["secret"], &relative);

    let secret = object("Secret");
    assert_eq!(secret["metadata"]["name"].as_str(), Some(secret_name));
    let userlist = str_of(&secret["stringData"][key.as_str()], &key);
    let users = Userlist::parse(userlist, "secret-userlist.example.yaml").unwrap();
    // The admin/stats user can log in to the console.
    assert!(users.get("postgres").is_some());
}

#[test]
fn shutdown_has_time_to_drain() {
    let d = object("Deployment");
    let grace = int_of(
        &pod_spec(&d)["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    assert!(grace > 30);
    let command: Vec<&str> = seq(
        &container(&d)["lifecycle"]["preStop"]["exec"]["command"],
        "preStop command",
    )
    .iter()
    .map(|a| str_of(a, "preStop arg"))
    .collect();
    assert_eq!(command[0], "sleep");
    let pre_stop: u64 = command[1].parse().unwrap();
    assert!(pre_stop > 0);
    // The grace period starts with preStop; SIGTERM's drain comes after it.
    let cfg = Config::load(None, &env_map(&d)).unwrap();
    let needed = Duration::from_secs(pre_stop) + cfg.timeouts.shutdown_timeout;
    assert!(
        Duration::from_secs(grace as u64) > needed,
        "grace {grace}s must exceed preStop {pre_stop}s + shutdown_timeout {:?}",
        cfg.timeouts.shutdown_timeout
    );
}

#[test]
fn service_and_budget_select_the_pods() {
    let d = object("Deployment");
    let labels = pod_labels(&d);
    let selects_pods = |selector: &Value, what: &str| {
        let selector = selector
            .as_mapping()
            .unwrap_or_else(|| panic!("{what} selector"));
        assert!(!selector.is_empty(), "{what} selector is empty");
        for (k, v) in selector {
            assert_eq!(&labels[k], v, "{what} selector {k:?}");
        }
    };

    let service = named("Service", "pgrelay");
    assert_eq!(service["spec"]["type"].as_str(), Some("ClusterIP"));
    selects_pods(&service["spec"]["selector"], "Service");
    let targets: BTreeSet<i64> = seq(&service["spec"]["ports"], "service ports")
        .iter()
        .map(|p| {
            let target = port_number(&d, &p["targetPort"]);
            // Clients use the same port numbers as in the pod.
            assert_eq!(int_of(&p["port"], "service port"), target);
            target
        })
        .collect();
    assert_eq!(targets, BTreeSet::from([LISTEN_PORT, METRICS_PORT]));

    let pdb = object("PodDisruptionBudget");
    selects_pods(
        &pdb["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget",
    );
    let replicas = int_of(&d["spec"]["replicas"], "replicas");
    let survivors = match pdb["spec"]["maxUnavailable"].as_i64() {
        Some(max_unavailable) => replicas - max_unavailable,
        None => int_of(&pdb["spec"]["minAvailable"], "minAvailable"),
    };
    assert!(
        survivors >= 1 && survivors < replicas,
        "a drain can progress and keeps a pod"
    );
}

#[test]
fn dockerfile_builds_locked_and_runs_unprivileged() {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let has = |line: &str| lines.contains(&line);
    assert!(text.contains("cargo build --release --locked -p pgrelay"));
    assert!(has("USER 10001:10001") || has("USER 10001"));
    assert!(has("EXPOSE 6432 9127"));
    assert!(has(r#"ENTRYPOINT ["/usr/local/bin/pgrelay"]"#));
    assert!(has(r#"CMD ["run"]"#));
    // The last stage is the runtime image, and it is not the Rust toolchain.
    let last_from = lines.iter().rev().find(|l| l.starts_with("FROM ")).unwrap();
    assert!(!last_from.contains("rust"), "{last_from}");
}

#[test]
fn cancel_peers_name_every_pod_on_the_client_port() {
    let d = object("Deployment");
    let env = env_map(&d);
    let cfg = Config::load(None, &env).unwrap_or_else(|e| panic!("{e}"));
    let [peer] = cfg.listen.cancel_peers.as_slice() else {
        panic!("one cancel_peers entry: {:?}", cfg.listen.cancel_peers);
    };
    let (host, port) = peer.rsplit_once(':').expect("host:port");
    assert_eq!(port.parse::<i64>().unwrap(), LISTEN_PORT);

    // A headless Service of that name resolves to each pod's own address,
    // draining ones included.
    let peers = named("Service", host);
    assert_eq!(peers["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        peers["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    let labels = pod_labels(&d);
    let selector = peers["spec"]["selector"].as_mapping().expect("selector");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&labels[k], v, "peers selector {k:?}");
    }
    let ports = seq(&peers["spec"]["ports"], "peer ports");
    assert!(ports
        .iter()
        .any(|p| port_number(&d, &p["targetPort"]) == LISTEN_PORT));
}
