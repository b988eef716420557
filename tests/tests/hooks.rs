//! OCI hooks: the six kinds in order with the state on stdin, args and env, failure,
//! timeout.

use hyperjail_tests::{marked_processes, require_root, wait_until, Bundle, Hyperjail, MARK_VAR};
use serde_json::{json, Value};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// The hook script: appends "<name> <status> <id>" to the log and saves its stdin as
/// `<name>.json`. It writes into `$1` (a host directory) when that directory exists where
/// it runs, else into `/hooklog` (the same directory, bind-mounted into the container).
const HOOK: &str = r#"
dir="$1"; name="$2"
[ -d "$dir" ] || dir=/hooklog
json=$(cat)
printf '%s' "$json" > "$dir/$name.json"
flat=$(printf '%s' "$json" | tr -d ' \n\t')
status=$(printf '%s' "$flat" | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p')
id=$(printf '%s' "$flat" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
echo "$name $status $id" >> "$dir/log"
"#;

/// A bundle whose every hook kind runs [`HOOK`], logging into `log_dir`.
fn hooked_bundle(log_dir: &Path) -> Bundle {
    let mut b = Bundle::new();
    b.mount(json!({"destination": "/hooklog", "type": "bind", "source": log_dir, "options": ["rbind", "rw"]}));
    let mut hooks = serde_json::Map::new();
    for kind in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        let hook = json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", HOOK, "hook", log_dir, kind],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", format!("{MARK_VAR}={}", b.marker())],
        });
        hooks.insert(kind.to_string(), json!([hook]));
    }
    b.config_mut()["hooks"] = Value::Object(hooks);
    b
}

fn log_lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn all_six_hooks_in_order_with_state() {
    require_root!();
    let hj = Hyperjail::new();
    let logs = tempfile::tempdir().unwrap();
    fs::set_permissions(
        logs.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut b = hooked_bundle(logs.path());
    b.sh("echo user-process >> /hooklog/log; sleep 1000");
    let c = hj.container("hooks");
    c.create(&b, &[]).assert_ok();
    let id = c.id.clone();
    // runc passes status "creating" to the create-time hooks, crun "created": both are taken.
    let create_phase = |line: &str, kind: &str| {
        let ok = [
            format!("{kind} creating {id}"),
            format!("{kind} created {id}"),
        ];
        assert!(
            ok.iter().any(|l| l == line),
            "expected one of {ok:?}, got {line:?}"
        );
    };
    let after_create = log_lines(logs.path());
    assert_eq!(
        after_create.len(),
        3,
        "three hooks run at create: {after_create:?}"
    );
    create_phase(&after_create[0], "prestart");
    create_phase(&after_create[1], "createRuntime");
    create_phase(&after_create[2], "createContainer");

    c.start().assert_ok();
    wait_until(
        Duration::from_secs(10),
        "poststart and the user process",
        || log_lines(logs.path()).len() >= 6,
    );
    let after_start = log_lines(logs.path());
    assert!(
        after_start[3].starts_with("startContainer "),
        "{after_start:?}"
    );
    assert!(
        after_start[3].ends_with(&format!(" {id}")),
        "{after_start:?}"
    );
    // poststart runs after the user process started; both are logged, in either order
    // (they run concurrently), but startContainer comes before the user process.
    let mut tail = after_start[4..6].to_vec();
    tail.sort();
    assert_eq!(
        tail,
        [
            format!("poststart running {id}"),
            "user-process".to_string()
        ],
        "{after_start:?}"
    );
    assert!(
        !after_start.iter().any(|l| l.starts_with("poststop")),
        "poststop ran before delete: {after_start:?}"
    );

    c.kill("KILL").assert_ok();
    c.wait_status("stopped");
    c.delete().assert_ok();
    let all = log_lines(logs.path());
    assert_eq!(all.len(), 7, "{all:?}");
    assert_eq!(all[6], format!("poststop stopped {id}"), "{all:?}");

    // Every hook got a JSON state of this container on stdin.
    let bundle = fs::canonicalize(b.path()).unwrap();
    for kind in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        let text = fs::read_to_string(logs.path().join(format!("{kind}.json"))).unwrap_or_default();
        let st: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{kind} got no JSON state ({e}): {text:?}"));
        assert_eq!(st["id"], id.as_str(), "{kind}: {st}");
        assert!(st["ociVersion"].is_string(), "{kind}: {st}");
        assert_eq!(
            st["bundle"].as_str().map(Path::new),
            Some(bundle.as_path()),
            "{kind}: {st}"
        );
        if kind != "poststop" {
            assert!(st["pid"].as_i64().is_some_and(|p| p > 0), "{kind}: {st}");
        }
    }
    let cc: Value = serde_json::from_str(
        &fs::read_to_string(logs.path().join("createContainer.json")).unwrap(),
    )
    .unwrap();
    assert!(
        matches!(cc["status"].as_str(), Some("creating" | "created")),
        "createContainer: {cc}"
    );
    let sc: Value =
        serde_json::from_str(&fs::read_to_string(logs.path().join("startContainer.json")).unwrap())
            .unwrap();
    assert!(
        matches!(sc["status"].as_str(), Some("created" | "running")),
        "startContainer: {sc}"
    );
}

#[test]
fn hook_args_and_env_are_passed() {
    require_root!();
    let hj = Hyperjail::new();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out");
    let mut b = Bundle::new();
    b.config_mut()["hooks"] = json!({"createRuntime": [{
        "path": "/bin/sh",
        "args": ["sh", "-c", "echo \"argv0=$0 a1=$1 a2=$2 HOOKVAR=$HOOKVAR OTHER=$OTHER\" > \"$1\"", "my-argv0", out, "second arg"],
        "env": ["HOOKVAR=hook value", "OTHER=2", "PATH=/bin:/usr/bin"]
    }]});
    let c = hj.container("hookenv");
    c.create(&b, &[]).assert_ok();
    let got = fs::read_to_string(&out).expect("the hook ran");
    assert_eq!(
        got.trim(),
        format!(
            "argv0=my-argv0 a1={} a2=second arg HOOKVAR=hook value OTHER=2",
            out.display()
        )
    );
}

#[test]
fn failing_create_runtime_hook_fails_create_and_leaves_nothing() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    b.config_mut()["hooks"] =
        json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 7"]}]});
    let c = hj.container("hookfail");
    let out = c.create(&b, &[]);
    out.assert_error(&["hook", "createRuntime"]);
    assert!(
        out.stderr.contains('7'),
        "the error should give the hook's exit status: {out}"
    );
    c.assert_nothing_left(&b);
    assert!(
        hj.state(&c.id).is_none(),
        "state answers for a failed create"
    );
}

#[test]
fn hook_timeout_kills_hook_and_fails_create() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let env = format!("{MARK_VAR}={}", b.marker());
    b.config_mut()["hooks"] = json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "60"], "env": [env], "timeout": 1}]});
    let c = hj.container("hooktime");
    let t = Instant::now();
    let out = c.create(&b, &[]);
    let took = t.elapsed();
    out.assert_error(&["timed out", "timeout"]);
    assert!(
        took < Duration::from_secs(30),
        "create took {took:?} with a 1 s hook timeout"
    );
    let left = marked_processes(b.marker());
    assert!(
        left.is_empty(),
        "the timed-out hook is still running: {left:?}"
    );
    c.assert_nothing_left(&b);
}

#[test]
fn failing_create_container_hook_leaves_nothing() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    b.config_mut()["hooks"] =
        json!({"createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 6"]}]});
    let c = hj.container("hookcc");
    let out = c.create(&b, &[]);
    out.assert_error(&["hook", "createContainer"]);
    c.assert_nothing_left(&b);
}

#[test]
fn poststop_runs_on_forced_delete() {
    require_root!();
    let hj = Hyperjail::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("poststop");
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    b.config_mut()["hooks"] =
        json!({"poststop": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > \"$1\"", "sh", log]}]});
    let c = hj.container("poststop");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    assert!(!log.exists(), "poststop ran early");
    c.delete_force().assert_ok();
    let text = fs::read_to_string(&log).expect("poststop ran on delete --force");
    let st: Value = serde_json::from_str(&text).expect("poststop got JSON state");
    assert_eq!(st["id"], c.id.as_str());
    assert_eq!(st["status"], "stopped", "{st}");
    c.assert_nothing_left(&b);
}
