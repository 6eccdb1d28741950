//! Remote and external latency as users run them: real `mnas agent` processes on loopback measured
//! through the pool and `mnas latency --device`, hostile clients, agents that die mid-measurement,
//! and `mnas latency --engine` with the ONNX Runtime runner script and with broken commands.
//!
//! Every wait has a bound (agent start, socket timeouts, engine timeouts), so a regression fails
//! instead of hanging.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use mnas_latency::pool::{AgentPool, PoolOptions};
use mnas_latency::protocol::{read_frame, write_frame, Request, Response};
use mnas_latency::MeasureOptions;
use mnas_space::Arch;

const TOKEN: &str = "test-token-0123";

/// A running `mnas agent`, killed when dropped.
struct AgentProc {
    child: Child,
    addr: String,
    stderr: Receiver<String>,
}

impl AgentProc {
    fn start(extra: &[&str]) -> AgentProc {
        AgentProc::start_on("127.0.0.1:0", extra)
    }

    fn start_on(listen: &str, extra: &[&str]) -> AgentProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mnas"))
            .args(["agent", "--listen", listen, "--token", TOKEN, "--io-timeout", "2", "-v"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mnas agent");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let first = line_rx.recv_timeout(Duration::from_secs(30)).expect("the agent prints its address");
        let addr = first.strip_prefix("mnas agent listening on ").expect("listening line").to_string();
        AgentProc { child, addr, stderr: err_rx }
    }

    fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// Waits for a log line containing `needle`.
    fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no `{needle}` in the agent's log within {within:?}: {e}"),
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mnas-cli-agent-{}", std::process::id())).join(name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn mnas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnas"))
        .args(args)
        .env("XDG_CACHE_HOME", scratch("xdg"))
        .env_remove("RUST_LOG")
        .env_remove("MNAS_AGENT_TOKEN")
        .output()
        .expect("run mnas")
}

fn small(resolution: u32) -> Arch {
    let mut arch = mnas_space::lookup("mnasnet-small").expect("zoo");
    arch.resolution = resolution;
    arch
}

fn quick() -> MeasureOptions {
    MeasureOptions { runs: 3, warmup: 1, max_cv: 10.0, ..MeasureOptions::default() }
}

fn pool(agents: &[String], options: PoolOptions) -> AgentPool {
    AgentPool::new(agents.to_vec(), TOKEN, options).expect("pool")
}

fn fast_pool_options() -> PoolOptions {
    PoolOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Some(Duration::from_secs(120)),
        retries: 0,
        backoff: Duration::from_millis(50),
    }
}

/// Sends raw bytes, then reads one response frame (if any) and whether the agent closed after it.
fn raw_exchange(addr: &str, bytes: &[u8]) -> (Option<Response>, bool) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(bytes).expect("send");
    let response = read_frame::<Response>(&mut s).ok();
    let mut rest = [0u8; 16];
    let closed = matches!(s.read(&mut rest), Ok(0) | Err(_));
    (response, closed)
}

fn error_message(r: Option<Response>) -> String {
    match r {
        Some(Response::Error { message }) => message,
        other => panic!("expected an error response, got {other:?}"),
    }
}

#[test]
fn measures_through_an_agent_and_serves_the_second_request_from_the_store() {
    let agent = AgentProc::start(&[]);
    let store = scratch("remote-store").join("latency.sqlite");
    let url = agent.url();
    let args = [
        "latency",
        "--arch",
        "mnasnet-small",
        "--resolution",
        "64",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--max-cv",
        "10",
        "--device",
        &url,
        "--token",
        TOKEN,
        "--store",
        store.to_str().expect("utf-8"),
        "--json",
    ];
    let first = mnas(&args);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).expect("json");
    assert_eq!((v["cached"].as_bool(), v["agent"].as_str()), (Some(false), Some(url.as_str())), "{v}");
    let m = &v["measurement"];
    assert!(m["arch"].as_str().is_some_and(|a| a.ends_with("|r64")), "{m}");
    assert_eq!((m["runs"].as_u64(), m["fingerprint"]["engine"].as_str()), (Some(3), Some("mnas-engine")));
    assert!(m["median_ms"].as_f64().is_some_and(|t| t > 0.0), "{m}");
    agent.wait_for_log("measured", Duration::from_secs(10));

    // The token from the environment, and the store keyed by the agent's ping fingerprint.
    let no_token: Vec<&str> = args.iter().copied().filter(|a| *a != "--token" && *a != TOKEN).collect();
    let second = Command::new(env!("CARGO_BIN_EXE_mnas"))
        .args(&no_token)
        .env("MNAS_AGENT_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .output()
        .expect("run mnas");
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let again: serde_json::Value = serde_json::from_slice(&second.stdout).expect("json");
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(again["measurement"]["median_ms"], m["median_ms"]);

    // Text output names the agent and the agent's device.
    let text = mnas(&args[..args.len() - 1]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("(cached)") && out.contains(&format!("agent: {url}")) && out.contains("device: "), "{out}");

    // A result whose spread stayed above the accepted one is measured again, never served.
    let stored: mnas_latency::Measurement = serde_json::from_value(m.clone()).expect("a measurement");
    let shaky = mnas_latency::Measurement { stable: false, ..stored };
    mnas_latency::Store::open(&store).unwrap().put(&shaky).unwrap();
    let third: serde_json::Value = serde_json::from_slice(&mnas(&args).stdout).expect("json");
    assert_eq!(third["cached"], false, "{third}");
}

#[test]
fn a_wrong_or_missing_token_is_one_clear_line() {
    let agent = AgentProc::start(&[]);
    let url = agent.url();
    let base = ["latency", "--arch", "mnasnet-small", "--resolution", "32", "--runs", "2", "--no-store"];
    let wrong: Vec<&str> = base.iter().copied().chain(["--device", &url, "--token", "not-the-token"]).collect();
    common::assert_error(&mnas(&wrong), &wrong, &format!("agent {url}: wrong token"), true);
    agent.wait_for_log("wrong token", Duration::from_secs(10));
    let missing: Vec<&str> = base.iter().copied().chain(["--device", &url]).collect();
    common::assert_error(&mnas(&missing), &missing, "MNAS_AGENT_TOKEN", true);
    // Still serving.
    let fps = pool(&[url], fast_pool_options()).fingerprints();
    assert!(fps[0].1.is_ok(), "{:?}", fps[0].1);
}

#[test]
fn garbage_and_oversized_frames_are_refused_and_the_agent_keeps_serving() {
    let agent = AgentProc::start(&[]);
    // An HTTP request: its first 4 bytes read as a ~1.2 GB length.
    let (r, closed) = raw_exchange(&agent.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let msg = error_message(r);
    assert!(msg.contains("larger than"), "{msg}");
    assert!(closed);
    // A 2 GB length prefix: refused without waiting for (or allocating) the body.
    let start = Instant::now();
    let (r, closed) = raw_exchange(&agent.addr, &[0x80, 0, 0, 0]);
    assert!(error_message(r).contains("2147483648 bytes") && closed);
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    // Random bytes behind a plausible length, and JSON of an unknown request type.
    let mut junk = vec![0, 0, 0, 64];
    let mut x: u32 = 12345;
    junk.extend((0..64).map(|_| {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (x >> 16) as u8
    }));
    let (r, closed) = raw_exchange(&agent.addr, &junk);
    assert!(error_message(r).contains("malformed") && closed);
    let mut frame = Vec::new();
    write_frame(&mut frame, &serde_json::json!({"type": "shell", "token": TOKEN, "cmd": "id"})).expect("encode");
    let (r, closed) = raw_exchange(&agent.addr, &frame);
    assert!(error_message(r).contains("malformed") && closed);
    // A truncated frame: the agent gives up after its --io-timeout (2 s) and says so.
    let (r, closed) = raw_exchange(&agent.addr, &[0, 0, 0, 100, b'{']);
    assert!(error_message(r).contains("timed out") && closed);
    // A peer that connects and leaves.
    drop(TcpStream::connect(&agent.addr).expect("connect"));

    let m = pool(&[agent.url()], fast_pool_options()).measure(&small(32), &quick()).expect("still serving");
    assert!(m.stats.median_ms > 0.0);
}

#[test]
fn invalid_archs_options_and_oversized_networks_get_error_answers() {
    let agent = AgentProc::start(&["--max-memory-mb", "256"]);
    let send = |arch: Arch, options: MeasureOptions| {
        let mut s = TcpStream::connect(&agent.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        write_frame(&mut s, &Request::Measure { token: TOKEN.into(), arch, options }).expect("send");
        error_message(read_frame(&mut s).ok())
    };
    let mut bad_kernel = small(32);
    bad_kernel.blocks[1].kernel = 4;
    let msg = send(bad_kernel, quick());
    assert!(msg.contains("invalid arch") && msg.contains("kernel"), "{msg}");
    let mut no_blocks = small(32);
    no_blocks.blocks.clear();
    assert!(send(no_blocks, quick()).contains("at least one block"));
    assert!(send(small(32), MeasureOptions { runs: 0, ..quick() }).contains("runs"));
    let msg = send(small(4096), MeasureOptions { batch: 64, ..quick() });
    assert!(msg.contains("too large for this agent") && msg.contains("limit 256 MiB"), "{msg}");
    let msg = send(small(32), MeasureOptions { threads: 4096, ..quick() });
    assert!(msg.contains("4096 threads"), "{msg}");
    // The pool validates before sending, with the same words.
    let mut bad = small(32);
    bad.blocks[0].stride = 3;
    let e = pool(&[agent.url()], fast_pool_options()).measure(&bad, &quick()).unwrap_err().to_string();
    assert!(e.contains("stride"), "{e}");
    // None of that hurt the agent.
    assert!(pool(&[agent.url()], fast_pool_options()).measure(&small(32), &quick()).is_ok());
}

#[test]
fn an_agent_killed_mid_measurement_hands_the_work_to_another() {
    let mut first = AgentProc::start(&[]);
    let second = AgentProc::start(&[]);
    let agents = [first.url(), second.url()];
    let pool = pool(&agents, fast_pool_options());
    let arch = mnas_space::lookup("mnasnet-a1").expect("zoo");
    let opts = MeasureOptions { runs: 10, warmup: 2, max_cv: 10.0, ..MeasureOptions::default() };
    std::thread::scope(|s| {
        let job = s.spawn(|| pool.measure_remote(&arch, &opts));
        // The pool tries agents in order: the first gets the job; kill it once it measures.
        first.wait_for_log("measuring", Duration::from_secs(30));
        first.kill();
        let remote = job.join().expect("no panic").expect("the second agent measures");
        assert_eq!(remote.agent, agents[1]);
        assert_eq!(remote.measurement.arch, arch.canonical());
        assert!(remote.measurement.stats.median_ms > 0.0);
    });
    second.wait_for_log("measured", Duration::from_secs(10));
    // The pool prefers agents that have not failed: the next request goes to the live one.
    let start = Instant::now();
    let again = pool.measure_remote(&small(32), &quick()).expect("live agent");
    assert_eq!(again.agent, agents[1]);
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn measure_many_spreads_archs_over_agents_in_input_order() {
    let (a, b) = (AgentProc::start(&[]), AgentProc::start(&[]));
    let pool = pool(&[a.url(), b.url()], fast_pool_options());
    let archs: Vec<Arch> = [32, 48, 40, 56].into_iter().map(small).collect();
    let results = pool.measure_many(&archs, &quick());
    assert_eq!(results.len(), archs.len());
    for (arch, r) in archs.iter().zip(&results) {
        let m = r.as_ref().expect("measured");
        assert_eq!(m.arch, arch.canonical());
    }
    // Both agents took work.
    a.wait_for_log("measured", Duration::from_secs(10));
    b.wait_for_log("measured", Duration::from_secs(10));
}

#[test]
fn a_dead_or_silent_pool_fails_within_its_timeout() {
    let mut agent = AgentProc::start(&[]);
    let dead = agent.url();
    agent.kill();
    let start = Instant::now();
    let e =
        pool(std::slice::from_ref(&dead), fast_pool_options()).measure(&small(32), &quick()).unwrap_err().to_string();
    assert_eq!(e, format!("no agent answered: {dead}: connection refused"));
    assert!(start.elapsed() < Duration::from_secs(5));

    // A listener that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("tcp://{}", silent.local_addr().expect("addr"));
    let held = std::thread::spawn(move || {
        let conns: Vec<TcpStream> = silent.incoming().take(2).filter_map(Result::ok).collect();
        std::thread::sleep(Duration::from_secs(6));
        drop(conns);
    });
    let options = PoolOptions { request_timeout: Some(Duration::from_secs(1)), ..fast_pool_options() };
    let start = Instant::now();
    let e = pool(&[silent_url.clone(), dead.clone()], options).measure(&small(32), &quick()).unwrap_err().to_string();
    assert_eq!(e, format!("no agent answered: {silent_url}: timed out after 1 s; {dead}: connection refused"));
    assert!(start.elapsed() < Duration::from_secs(4), "{:?}", start.elapsed());

    // The CLI says the same in one line, also with the store on (the ping is bounded too).
    let args = ["latency", "--arch", "mnasnet-small", "--runs", "2", "--device", &silent_url, "--token", "t"];
    let with_timeout: Vec<&str> = args.iter().copied().chain(["--timeout", "1"]).collect();
    let start = Instant::now();
    common::assert_error(&mnas(&with_timeout), &with_timeout, "timed out after 1 s", true);
    // A 1 s ping, then two 1 s tries 1 s apart (the CLI's pool retries once).
    assert!(start.elapsed() < Duration::from_secs(8), "{:?}", start.elapsed());
    let _ = held.join();
    let refused = ["latency", "--arch", "mnasnet-small", "--no-store", "--device", &dead, "--token", "t"];
    common::assert_error(&mnas(&refused), &refused, "connection refused", true);
}

#[test]
fn agent_startup_checks() {
    let args = ["agent", "--listen", "127.0.0.1:0"];
    common::assert_error(&mnas(&args), &args, "no token", true);
    let args = ["agent", "--listen", "127.0.0.1:99999", "--token", "t"];
    common::assert_error(&mnas(&args), &args, "cannot listen on 127.0.0.1:99999", true);
    let args = ["latency", "--arch", "mnasnet-small", "--device", "http://x:1", "--token", "t"];
    common::assert_error(&mnas(&args), &args, "invalid agent address `http://x:1`", true);
    let args = ["latency", "--arch", "mnasnet-small", "--device", "tcp://x:1", "--engine", "cmd:true {model}"];
    common::assert_error(&mnas(&args), &args, "cannot be used with", false);
    // Any address: a warning that it is not loopback.
    let open = AgentProc::start_on("0.0.0.0:0", &[]);
    assert!(open.addr.starts_with("0.0.0.0:"), "{}", open.addr);
    open.wait_for_log("non-loopback", Duration::from_secs(10));
}

/// `MNAS_PYTHON`, else the workspace's `.venv` (what `.ci/run` sets up), else `python3` — as the
/// mnas-export ONNX Runtime tests find it.
fn python() -> String {
    if let Ok(p) = std::env::var("MNAS_PYTHON") {
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.is_file() {
        return venv.to_string_lossy().into_owned();
    }
    "python3".into()
}

#[test]
fn the_ort_runner_script_measures_through_the_engine_hook() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/reference/ort_latency.py");
    let engine = format!("cmd:'{}' '{}' {{model}} --runs {{runs}} --warmup {{warmup}}", python(), script.display());
    let store = scratch("engine-store").join("latency.sqlite");
    let args = [
        "latency",
        "--arch",
        "mnasnet-small",
        "--resolution",
        "64",
        "--runs",
        "5",
        "--warmup",
        "1",
        "--engine",
        &engine,
        "--timeout",
        "120",
        // About reuse, not stability (a busy machine may push 5 runs past the default CV limit).
        "--max-cv",
        "1000",
        "--store",
        store.to_str().expect("utf-8"),
        "--json",
    ];
    let first = mnas(&args);
    assert!(
        first.status.success(),
        "{}\n(needs Python with onnxruntime and numpy: run .ci/run or point MNAS_PYTHON at one)",
        String::from_utf8_lossy(&first.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).expect("json");
    let m = &v["measurement"];
    assert_eq!(v["cached"], false);
    assert_eq!(m["fingerprint"]["engine"].as_str(), Some(format!("cmd:{}", &engine[4..]).as_str()));
    let ms = m["median_ms"].as_f64().expect("median");
    assert!(ms > 0.0 && ms < 10_000.0, "{ms}");
    let again: serde_json::Value = serde_json::from_slice(&mnas(&args).stdout).expect("json");
    assert_eq!((again["cached"].as_bool(), again["measurement"]["median_ms"].as_f64()), (Some(true), Some(ms)));
    // Another command is another engine: measured again, not served from the first one's figure.
    let other = engine.replace("--warmup {warmup}", "--warmup 0");
    let third: Vec<&str> = args.iter().map(|a| if *a == engine { other.as_str() } else { a }).collect();
    let v3: serde_json::Value = serde_json::from_slice(&mnas(&third).stdout).expect("json");
    assert_eq!(v3["cached"], false, "{v3}");
}

#[test]
fn broken_engine_commands_are_clear_errors() {
    fn run<'a>(engine: &'a str, extra: &[&'a str]) -> (Output, Vec<&'a str>, Duration) {
        let args: Vec<&str> =
            ["latency", "--arch", "mnasnet-small", "--resolution", "32", "--no-store", "--engine", engine]
                .into_iter()
                .chain(extra.iter().copied())
                .collect();
        let start = Instant::now();
        let out = mnas(&args);
        (out, args, start.elapsed())
    }
    let (o, args, _) = run("cmd:echo model {model} is bad >&2; exit 1", &[]);
    common::assert_error(&o, &args, "the engine command failed (exit status: 1)", true);
    common::assert_error(&o, &args, "model.onnx is bad", true);
    let (o, args, _) = run("cmd:echo all done with {model}", &[]);
    common::assert_error(&o, &args, "no latency found in the engine command's output", true);
    common::assert_error(&o, &args, "all done with", true);
    let (o, args, took) = run("cmd:echo starting; sleep 30; echo latency_ms: 1 {model}", &["--timeout", "1"]);
    common::assert_error(&o, &args, "did not finish within 1 s and was killed; output ends: starting", true);
    assert!(took < Duration::from_secs(10), "{took:?}");
    let (o, args, _) = run("cmd:echo latency_ms: 1", &[]);
    common::assert_error(&o, &args, "--engine must look like cmd:'COMMAND {model}'", true);
    let (o, args, _) = run("cmd:echo latency_ms: 2.5 {model}", &["--per-layer"]);
    common::assert_error(&o, &args, "--per-layer", true);
    // The generic format, read from a plain shell command.
    let (o, _, _) = run("cmd:test -s {model} && echo warm 9 ms && echo latency_ms: 2.5", &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("2.500 ms as reported by the engine command"), "{out}");
    assert!(out.contains("engine: cmd:test -s {model}"), "{out}");
}
