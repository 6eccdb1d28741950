//! Searches with trials on Redis Streams workers, against a real `redis-server` started per test
//! (on a Unix socket, stopped by its pid): 2 workers; a worker killed mid-trial; the search killed
//! and resumed; garbage in the queue; wrong credentials and an unreachable broker; the broker
//! restarted (append-only) mid-search. Every trial must be recorded exactly once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::assert_error;
use mnas_broker::test_server::TestServer;
use mnas_broker::{range, Broker};
use mnas_search::store::RunStore;
use mnas_search::{Trial, TrialStatus};

fn mnas() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnas"));
    c.env_remove("RUST_LOG").env_remove("MNAS_BROKER_URL");
    c
}

fn setup(name: &str, password: Option<&str>, appendonly: bool) -> (PathBuf, TestServer) {
    let dir = std::env::temp_dir().join(format!("mnas-cli-broker-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = TestServer::start(&dir.join("redis"), password, appendonly).unwrap_or_else(|e| panic!("{e}"));
    (dir, server)
}

/// A search small enough for a test, dispatching to `url`.
fn search_args(run: &Path, dir: &Path, url: &str, trials: usize, per_step: usize, images: usize) -> Vec<String> {
    [
        "search",
        "--out",
        run.to_str().unwrap(),
        "--trials",
        &trials.to_string(),
        "--models-per-step",
        &per_step.to_string(),
        "--proxy-images",
        &images.to_string(),
        "--val-fraction",
        "0.02",
        "--resolution",
        "32",
        "--latency-runs",
        "2",
        "--target",
        "1.5",
        "--latency-store",
        dir.join("latency.sqlite").to_str().unwrap(),
        "--broker",
        url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn worker(url: &str, name: &str, extra: &[&str]) -> Child {
    mnas()
        .args(["worker", "--broker", url, "--name", name, "--threads", "1", "--idle-exit", "60"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a worker")
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn finish(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!("did not finish within {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn trials(run: &Path) -> Vec<Trial> {
    RunStore::open_read_only(run).map(|s| s.trials().unwrap_or_default()).unwrap_or_default()
}

/// Every (step, index) of a finished run exactly once, in order, and every trial ok.
fn assert_once_each(run: &Path, steps: u64, per_step: u64) {
    let t = trials(run);
    let keys: Vec<(u64, u64)> = t.iter().map(|t| (t.step, t.index)).collect();
    let want: Vec<(u64, u64)> = (0..steps).flat_map(|s| (0..per_step).map(move |i| (s, i))).collect();
    assert_eq!(keys, want, "every trial exactly once");
    assert!(t.iter().all(|t| t.status == TrialStatus::Ok), "{t:?}");
}

/// The run's result log: (status, step, index, worker) per report.
fn reports(url: &str, run: &Path) -> Vec<(String, u64, u64, String)> {
    let config = RunStore::open_read_only(run).unwrap().config().unwrap();
    let id = config["run_id"].as_str().unwrap().to_string();
    let broker = Broker::connect(url).unwrap();
    let mut con = broker.connection().unwrap();
    range(&broker, &mut con, &format!("mnas:results:{id}"))
        .unwrap()
        .into_iter()
        .map(|e| {
            let f = |k: &str| e.get(k).unwrap_or_default().to_string();
            (f("status"), f("step").parse().unwrap(), f("index").parse().unwrap(), f("worker"))
        })
        .collect()
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_search_with_two_workers_records_every_trial_once() {
    let (dir, srv) = setup("two", Some("pw"), false);
    let url = srv.url();
    let w1 = worker(&url, "w1", &[]);
    let w2 = worker(&url, "w2", &[]);
    let run = dir.join("run");
    let o = mnas().args(search_args(&run, &dir, &url, 6, 3, 64)).output().unwrap();
    stop(w1);
    stop(w2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("training on worker w"), "the live display names workers: {err}");
    assert_once_each(&run, 2, 3);
    let oks = reports(&url, &run).into_iter().filter(|r| r.0 == "ok").count();
    assert_eq!(oks, 6, "each trial trained once");
}

#[test]
fn a_worker_killed_mid_trial_leaves_it_to_another() {
    let (dir, srv) = setup("kill-worker", None, false);
    let url = srv.url();
    let run = dir.join("run");
    // One trial long enough to be killed in (2,000 images).
    let search = mnas().args(search_args(&run, &dir, &url, 1, 1, 2000)).stderr(Stdio::piped()).spawn().unwrap();
    let doomed = worker(&url, "doomed", &[]);
    wait_until(Duration::from_secs(120), "the first worker to start the trial", || {
        RunStore::open_read_only(&run).is_ok() && reports(&url, &run).iter().any(|r| r.0 == "started")
    });
    stop(doomed); // SIGKILL, mid-trial
    let rescuer = worker(&url, "rescuer", &["--lease", "2"]);
    let o = finish(search, Duration::from_secs(600));
    stop(rescuer);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_once_each(&run, 1, 1);
    let r = reports(&url, &run);
    assert!(r.contains(&("started".into(), 0, 0, "doomed".into())), "{r:?}");
    assert!(r.contains(&("ok".into(), 0, 0, "rescuer".into())), "{r:?}");
    assert!(!r.iter().any(|x| x.0 == "ok" && x.3 == "doomed"), "{r:?}");
}

#[test]
fn the_search_killed_and_resumed_takes_in_what_workers_finished_and_trains_nothing_twice() {
    let (dir, srv) = setup("kill-search", None, false);
    let url = srv.url();
    let w1 = worker(&url, "w1", &[]);
    let w2 = worker(&url, "w2", &[]);
    let run = dir.join("run");
    let args = search_args(&run, &dir, &url, 6, 3, 400);
    let search = mnas().args(&args).stderr(Stdio::null()).spawn().unwrap();
    wait_until(Duration::from_secs(300), "a first recorded trial", || !trials(&run).is_empty());
    stop(search); // SIGKILL
                  // The workers finish what was dispatched meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    let before = trials(&run).len();
    let resumed = mnas().args(["search", "--resume", run.to_str().unwrap(), "--broker", &url]).output().unwrap();
    stop(w1);
    stop(w2);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(before < 6, "the kill came mid-search");
    assert_once_each(&run, 2, 3);
    let r = reports(&url, &run);
    for s in 0..2u64 {
        for i in 0..3u64 {
            let trained = r.iter().filter(|x| x.0 == "started" && x.1 == s && x.2 == i).count();
            assert_eq!(trained, 1, "trial {s}.{i} trained {trained} times: {r:?}");
        }
    }
}

#[test]
fn garbage_in_the_queue_is_dead_lettered_while_workers_keep_serving() {
    let (dir, srv) = setup("garbage", None, false);
    let url = srv.url();
    let broker = Broker::connect(&url).unwrap();
    let mut con = broker.connection().unwrap();
    let q = mnas_pipeline::distributed::trial_queue();
    q.ensure(&broker, &mut con).unwrap();
    q.push(&broker, &mut con, &[("hello", "world".into())], 1000).unwrap();
    q.push(&broker, &mut con, &[("schema", "mnas-trial/1".into()), ("arch", "x".repeat(200_000))], 1000).unwrap();
    q.push(&broker, &mut con, &[("schema", "mnas-trial/99".into()), ("run", "other".into())], 1000).unwrap();
    let w = worker(&url, "w1", &[]);
    let run = dir.join("run");
    let o = mnas().args(search_args(&run, &dir, &url, 2, 2, 64)).output().unwrap();
    stop(w);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_once_each(&run, 1, 2);
    let dead = range(&broker, &mut con, &q.dead_letters()).unwrap();
    let reasons: Vec<&str> = dead.iter().map(|e| e.get("reason").unwrap_or_default()).collect();
    assert_eq!(dead.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("not a trial spec"), "{reasons:?}");
    assert!(reasons[1].contains("bytes"), "{reasons:?}");
    assert!(reasons[2].contains("mnas-trial/99"), "{reasons:?}");
}

#[test]
fn bad_brokers_give_one_error_line_and_leave_nothing_behind() {
    let (dir, srv) = setup("bad", Some("right"), false);
    let wrong = format!("unix://{}?pass=wrong", srv.socket.display());
    let run = dir.join("run");
    // Something that is not Redis on the port: an HTTP server's answer to whatever it is sent.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let not_redis = format!("redis://{}", http.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut c in http.incoming().flatten() {
            use std::io::{Read, Write};
            let _ = c.read(&mut [0u8; 256]);
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let cases: Vec<(Vec<String>, &str)> = vec![
        (search_args(&run, &dir, &not_redis, 2, 2, 64), "does not speak Redis"),
        (vec!["worker".into(), "--broker".into(), not_redis.clone()], "does not speak Redis"),
        (search_args(&run, &dir, &wrong, 2, 2, 64), "refused the credentials"),
        (search_args(&run, &dir, "redis://127.0.0.1:1", 2, 2, 64), "cannot reach the broker"),
        (search_args(&run, &dir, "http://example", 2, 2, 64), "broker URL"),
        (vec!["worker".into(), "--broker".into(), wrong.clone()], "refused the credentials"),
        (vec!["worker".into(), "--broker".into(), "redis://127.0.0.1:1".into()], "cannot reach the broker"),
    ];
    for (args, needle) in cases {
        let o = mnas().args(&args).output().unwrap();
        let shown: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_error(&o, &shown, needle, false);
        assert!(!String::from_utf8_lossy(&o.stderr).contains("pass=wrong"), "the password is never printed");
        assert!(!run.join("search.sqlite").exists(), "{shown:?} left a store behind");
    }
    // A run that trains with workers needs the broker again to continue.
    let url = srv.url();
    let w = worker(&url, "w1", &[]);
    let o = mnas().args(search_args(&run, &dir, &url, 2, 2, 64)).output().unwrap();
    stop(w);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let args = ["search", "--resume", run.to_str().unwrap()];
    assert_error(&mnas().args(args).output().unwrap(), &args, "give the broker URL again", false);
}

#[test]
fn the_broker_restarted_mid_search_keeps_its_streams_and_the_search_goes_on() {
    let (dir, mut srv) = setup("restart", None, true);
    let url = srv.url();
    let w1 = worker(&url, "w1", &[]);
    let w2 = worker(&url, "w2", &[]);
    let run = dir.join("run");
    let search = mnas().args(search_args(&run, &dir, &url, 6, 3, 400)).stderr(Stdio::piped()).spawn().unwrap();
    wait_until(Duration::from_secs(300), "a first recorded trial", || !trials(&run).is_empty());
    srv.restart().expect("redis restarts");
    let o = finish(search, Duration::from_secs(600));
    stop(w1);
    stop(w2);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_once_each(&run, 2, 3);
}

#[test]
fn device_agents_on_the_broker_measure_for_latency_and_search() {
    let (dir, srv) = setup("devices", Some("pw"), false);
    let url = srv.url();
    let agent = |name: &str| {
        mnas()
            .args(["agent", "--broker", &url, "--device-class", "ci-cpu"])
            .env("HOSTNAME", name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent")
    };
    let (a1, a2) = (agent("a1"), agent("a2"));
    let o = mnas()
        .args(["latency", "--arch", "mnasnet-small", "--resolution", "32", "--runs", "3", "--warmup", "1"])
        .args(["--device", "broker:ci-cpu", "--broker", &url, "--no-store", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let m = &json["measurement"];
    assert_eq!(m["runs"], 3);
    assert_eq!(m["fingerprint"]["engine"], "mnas-engine", "the agent's fingerprint: {m}");
    assert!(m["median_ms"].as_f64().is_some_and(|v| v > 0.0));
    // A search that trains here and measures on the class.
    let run = dir.join("run");
    let mut args = search_args(&run, &dir, &url, 2, 2, 64);
    args.extend(["--latency-device".into(), "broker:ci-cpu".into(), "--train-here".into()]);
    let o = mnas().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_once_each(&run, 1, 2);
    assert!(trials(&run).iter().all(|t| t.fingerprint.as_ref().is_some_and(|f| f["engine"] == "mnas-engine")));
    // A class nobody serves: the latency request times out with its reason.
    let o = mnas()
        .args(["latency", "--arch", "mnasnet-small", "--resolution", "32", "--runs", "2", "--timeout", "2"])
        .args(["--device", "broker:nobody", "--broker", &url, "--no-store"])
        .output()
        .unwrap();
    assert_error(&o, &["latency", "--device", "broker:nobody"], "no agent of device class `nobody` answered", false);
    stop(a1);
    stop(a2);
}

#[test]
fn a_worker_with_other_data_refuses_the_trial_and_trains_nothing() {
    let (dir, srv) = setup("other-data", None, false);
    let url = srv.url();
    let imagenette = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/imagenette-96.tar.gz");
    assert!(imagenette.exists(), "{} missing (../shared/data)", imagenette.display());
    let w = worker(&url, "elsewhere", &["--data", imagenette.to_str().unwrap()]);
    let run = dir.join("run");
    // The search trains on the embedded CIFAR-10 subset; the only worker holds Imagenette.
    let o = mnas().args(search_args(&run, &dir, &url, 1, 1, 64)).output().unwrap();
    stop(w);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = trials(&run);
    assert_eq!(t.len(), 1, "the trial is recorded, not lost");
    assert_eq!(t[0].status, TrialStatus::Unavailable, "{:?}", t[0]);
    let reason = t[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("is not the run's"), "{reason}");
    assert!(!reports(&url, &run).iter().any(|r| r.0 == "ok" || r.0 == "started"), "nothing was trained");
}
