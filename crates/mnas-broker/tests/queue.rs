//! The queue against a real redis-server: delivery, leases and take-over, heartbeats, dead
//! letters, and the errors a user can meet (wrong password, nothing listening, not Redis).

use std::time::Duration;

use mnas_broker::test_server::TestServer;
use mnas_broker::{Broker, BrokerError, Queue};

fn server(name: &str, password: Option<&str>) -> TestServer {
    let dir = std::env::temp_dir().join(format!("mnas-broker-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TestServer::start(&dir, password, false).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn entries_are_delivered_leased_taken_over_and_dead_lettered() {
    let srv = server("queue", None);
    let broker = Broker::connect(&srv.url()).expect("connects");
    assert!(broker.version.starts_with(char::is_numeric));
    let mut con = broker.connection().expect("connection");
    let q = Queue::new("t:trials", "workers");
    q.ensure(&broker, &mut con).expect("group");
    q.ensure(&broker, &mut con).expect("idempotent");
    let id = q.push(&broker, &mut con, &[("arch", "a".into()), ("step", "0".into())], 1000).expect("push");

    let lease = Duration::from_millis(300);
    let e = q.take(&broker, &mut con, "w1", lease, Duration::from_millis(100)).expect("take").expect("an entry");
    assert_eq!((e.id.as_str(), e.get("arch"), e.deliveries), (id.as_str(), Some("a"), 1));
    // Nothing else to take while w1 holds it and its lease is fresh.
    assert!(q.take(&broker, &mut con, "w2", lease, Duration::from_millis(50)).expect("take").is_none());
    // w1's heartbeats keep it alive past the lease.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(150));
        assert!(q.heartbeat(&broker, &mut con, "w1", &id).expect("heartbeat"));
        assert!(q.take(&broker, &mut con, "w2", lease, Duration::from_millis(10)).expect("take").is_none());
    }
    // w1 goes silent: after the lease, w2 takes it over, delivered a second time.
    std::thread::sleep(Duration::from_millis(400));
    let again = q.take(&broker, &mut con, "w2", lease, Duration::from_millis(10)).expect("take").expect("taken over");
    assert_eq!((again.id.as_str(), again.deliveries), (id.as_str(), 2));
    // w1's late heartbeat learns it lost the entry... XCLAIM by id moves it back: only the
    // current owner may heartbeat, so a worker checks ownership by the delivery count instead.
    q.ack(&broker, &mut con, &id).expect("ack");
    assert_eq!(q.deliveries(&broker, &mut con, &id).expect("pending"), 0);

    // A poison entry goes to the dead letters with its reason.
    let bad = q.push(&broker, &mut con, &[("garbage", "x".repeat(10_000))], 1000).expect("push");
    let e = q.take(&broker, &mut con, "w1", lease, Duration::from_millis(100)).expect("take").expect("entry");
    assert_eq!(e.id, bad);
    q.dead_letter(&broker, &mut con, &e, "not a trial spec").expect("dead letter");
    let dead = mnas_broker::range(&broker, &mut con, &q.dead_letters()).expect("range");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].get("reason"), Some("not a trial spec"));
    assert!(dead[0].get("fields").map(|f| f.len() <= 4096).unwrap_or(false));
    assert_eq!(q.deliveries(&broker, &mut con, &bad).expect("pending"), 0);
}

#[test]
fn a_wrong_password_and_an_unreachable_or_foreign_broker_say_so() {
    let srv = server("auth", Some("s3cret"));
    assert!(Broker::connect(&srv.url()).is_ok());
    let wrong = format!("unix://{}?pass=nope", srv.socket.display());
    match Broker::connect(&wrong) {
        Err(e @ BrokerError::Auth { .. }) => assert!(!e.to_string().contains("nope"), "{e}"),
        Err(e) => panic!("wrong password: {e}"),
        Ok(_) => panic!("wrong password accepted"),
    }
    let none = format!("unix://{}", srv.socket.display());
    assert!(matches!(Broker::connect(&none), Err(BrokerError::Auth { .. })));
    let gone = format!("unix://{}/nothing.sock", srv.dir.display());
    assert!(matches!(Broker::connect(&gone), Err(BrokerError::Unreachable { .. })));
    // A TCP port where something else answers: not Redis.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let talker = std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    match Broker::connect(&format!("redis://127.0.0.1:{port}")) {
        Err(BrokerError::NotRedis { .. }) | Err(BrokerError::Command(_)) => {}
        Err(e) => panic!("not redis: {e}"),
        Ok(_) => panic!("an HTTP reply taken for Redis"),
    }
    let _ = talker.join();
    // A key of another type where a queue should be.
    let broker = Broker::connect(&srv.url()).expect("connects");
    let mut con = broker.connection().expect("connection");
    redis::cmd("SET").arg("t:taken").arg("a string").query::<()>(&mut con).expect("set");
    match Queue::new("t:taken", "g").ensure(&broker, &mut con) {
        Err(BrokerError::WrongType { key }) => assert_eq!(key, "t:taken"),
        other => panic!("{other:?}"),
    }
}
