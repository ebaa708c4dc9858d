//! End-to-end tests of the admin socket: a real unix socket in a temp
//! directory, a server in front of a tiny in-memory dataplane, and the
//! client driving it through the `Admin` trait.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rvs_admin::{Admin, AdminClient, Server, SharedAdmin};
use rvs_model::admin::{AdminError, Op, OpKind, errno};
use rvs_model::{
    Connection, Daemon, DaemonState, Destination, DestinationStatus, Info, Scheduler, Service,
    ServiceKey, ServiceStatus, Stats, Timeouts,
};
use rvs_testrig::TempDir;

/// A minimal dataplane: services and destinations in maps.
#[derive(Default)]
struct Memory {
    services: BTreeMap<ServiceKey, (Service, Vec<Destination>)>,
    timeouts: Timeouts,
    daemons: Vec<Daemon>,
}

impl Admin for Memory {
    fn info(&mut self) -> Result<Info, AdminError> {
        Ok(Info {
            version: 0x010203,
            conn_table_size: 4096,
        })
    }

    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        Ok(self
            .services
            .values()
            .map(|(s, _)| ServiceStatus {
                service: s.clone(),
                stats: Stats::default(),
            })
            .collect())
    }

    fn service(&mut self, key: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        self.services
            .get(key)
            .map(|(s, _)| ServiceStatus {
                service: s.clone(),
                stats: Stats {
                    conns: 7,
                    ..Stats::default()
                },
            })
            .ok_or(AdminError::refused_for(
                OpKind::GetServices,
                errno::ESRCH,
                *key,
            ))
    }

    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        let (_, dests) = self.services.get(key).ok_or(AdminError::refused_for(
            OpKind::GetDestinations,
            errno::ESRCH,
            *key,
        ))?;
        Ok(dests
            .iter()
            .map(|d| DestinationStatus {
                destination: d.clone(),
                active_conns: 1,
                inactive_conns: 2,
                persistent_conns: 0,
                stats: Stats::default(),
            })
            .collect())
    }

    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        Ok(self.timeouts)
    }

    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        Ok(self.daemons.clone())
    }

    fn connections(&mut self) -> Result<Vec<Connection>, AdminError> {
        Ok(vec![Connection {
            protocol: "TCP".into(),
            client: "127.0.0.1:40000".parse().unwrap(),
            virtual_addr: "127.0.0.2:80".parse().unwrap(),
            destination: "127.0.0.3:8080".parse().unwrap(),
            state: "ESTABLISHED".into(),
            expires: 899,
            pe: None,
        }])
    }

    fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        let refuse = |errno| AdminError::refusal_of(op, errno);
        match op {
            Op::AddService(s) => {
                if self.services.contains_key(&s.key) {
                    return Err(refuse(errno::EEXIST));
                }
                self.services.insert(s.key, (s.clone(), Vec::new()));
            }
            Op::EditService(s) => {
                let entry = self.services.get_mut(&s.key).ok_or(refuse(errno::ESRCH))?;
                entry.0 = s.clone();
            }
            Op::DeleteService(k) => {
                self.services.remove(k).ok_or(refuse(errno::ESRCH))?;
            }
            Op::Flush => self.services.clear(),
            Op::AddDestination(k, d) => {
                let entry = self.services.get_mut(k).ok_or(refuse(errno::ESRCH))?;
                if entry.1.iter().any(|x| x.addr == d.addr) {
                    return Err(refuse(errno::EEXIST));
                }
                entry.1.push(d.clone());
            }
            Op::EditDestination(k, d) => {
                let entry = self.services.get_mut(k).ok_or(refuse(errno::ESRCH))?;
                let slot = entry
                    .1
                    .iter_mut()
                    .find(|x| x.addr == d.addr)
                    .ok_or(refuse(errno::ENOENT))?;
                *slot = d.clone();
            }
            Op::DeleteDestination(k, a) => {
                let entry = self.services.get_mut(k).ok_or(refuse(errno::ESRCH))?;
                let before = entry.1.len();
                entry.1.retain(|x| x.addr != *a);
                if entry.1.len() == before {
                    return Err(refuse(errno::ENOENT));
                }
            }
            Op::Zero(_) => {}
            Op::SetTimeouts(t) => self.timeouts = *t,
            Op::StartDaemon(d) => self.daemons.push(d.clone()),
            Op::StopDaemon(state) => self.daemons.retain(|d| d.state != *state),
        }
        Ok(())
    }
}

struct Fixture {
    _dir: TempDir,
    path: PathBuf,
    running: Option<rvs_admin::RunningServer>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().unwrap();
        }
    }
}

fn start(name: &str) -> Fixture {
    let dir = TempDir::new(&format!("admin-{name}")).unwrap();
    let path = dir.join("admin.sock");
    let listener = rvs_admin::bind(&path).unwrap();
    let admin: SharedAdmin = Arc::new(Mutex::new(Memory::default()));
    let running = Server::new(listener, admin).unwrap().spawn().unwrap();
    Fixture {
        _dir: dir,
        path,
        running: Some(running),
    }
}

fn client(f: &Fixture) -> AdminClient {
    let mut c = AdminClient::connect(&f.path).unwrap();
    c.set_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

fn key() -> ServiceKey {
    ServiceKey::tcp("127.0.0.2:80".parse().unwrap())
}

#[test]
fn every_request_kind_round_trips() {
    let f = start("roundtrip");
    let mut c = client(&f);
    assert_eq!(c.info().unwrap().conn_table_size, 4096);
    assert!(c.services().unwrap().is_empty());

    let svc = Service::new(key(), Scheduler::WeightedLeastConnection).persistent(300);
    c.apply(&Op::AddService(svc.clone())).unwrap();
    let dest = Destination::masquerade("127.0.0.3:8080".parse().unwrap());
    c.apply(&Op::AddDestination(key(), dest.clone())).unwrap();

    assert_eq!(c.services().unwrap()[0].service, svc);
    let one = c.service(&key()).unwrap();
    assert_eq!(one.service, svc);
    assert_eq!(one.stats.conns, 7);
    let dests = c.destinations(&key()).unwrap();
    assert_eq!(dests.len(), 1);
    assert_eq!(dests[0].destination, dest);
    assert_eq!(dests[0].inactive_conns, 2);

    let t = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    c.apply(&Op::SetTimeouts(t)).unwrap();
    assert_eq!(c.timeouts().unwrap(), t);

    let daemon = Daemon {
        state: DaemonState::Master,
        mcast_ifn: "eth0".into(),
        syncid: 9,
        sync_maxlen: 0,
        mcast_group: Some("224.0.0.81".parse().unwrap()),
        mcast_port: 0,
        mcast_ttl: 0,
    };
    c.apply(&Op::StartDaemon(daemon.clone())).unwrap();
    assert_eq!(c.daemons().unwrap(), vec![daemon]);
    assert_eq!(c.connections().unwrap()[0].state, "ESTABLISHED");

    let results = c.apply_batch(&[
        Op::DeleteDestination(key(), "127.0.0.3:8080".parse().unwrap()),
        Op::DeleteDestination(key(), "127.0.0.3:8080".parse().unwrap()),
        Op::Zero(None),
        Op::StopDaemon(DaemonState::Master),
        Op::Flush,
    ]);
    assert_eq!(results.len(), 5);
    assert!(results[0].is_ok());
    assert_eq!(
        results[1].as_ref().unwrap_err().errno(),
        Some(errno::ENOENT)
    );
    assert!(results[2..].iter().all(Result::is_ok), "{results:?}");
    assert!(c.services().unwrap().is_empty());
    assert!(c.daemons().unwrap().is_empty());
    assert!(c.apply_batch(&[]).is_empty());
}

#[test]
fn refusals_keep_op_errno_and_service() {
    let f = start("refusals");
    let mut c = client(&f);
    let err = c.service(&key()).unwrap_err();
    assert!(
        matches!(
            err,
            AdminError::Refused {
                op: OpKind::GetServices,
                errno: errno::ESRCH,
                service: Some(k),
                destination: None,
            } if k == key()
        ),
        "{err:?}"
    );
    let svc = Service::new(key(), Scheduler::RoundRobin);
    c.apply(&Op::AddService(svc.clone())).unwrap();
    let err = c.apply(&Op::AddService(svc)).unwrap_err();
    assert_eq!(err.errno(), Some(errno::EEXIST));
    assert_eq!(
        err.to_string(),
        AdminError::refused_for(OpKind::AddService, errno::EEXIST, key()).to_string()
    );
    let err = c
        .apply(&Op::DeleteService(ServiceKey::udp(
            "127.0.0.9:53".parse().unwrap(),
        )))
        .unwrap_err();
    assert!(matches!(
        err,
        AdminError::Refused {
            op: OpKind::DeleteService,
            errno: errno::ESRCH,
            ..
        }
    ));
}

fn raw_exchange(
    reader: &mut BufReader<UnixStream>,
    writer: &mut UnixStream,
    line: &[u8],
) -> serde_json::Value {
    writer.write_all(line).unwrap();
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap()
}

#[test]
fn malformed_lines_get_an_error_and_the_connection_keeps_working() {
    let f = start("malformed");
    let stream = UnixStream::connect(&f.path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);

    for bad in [
        &b"this is not json\n"[..],
        b"{\"v\":1,\"request\":\"Frobnicate\"}\n",
        b"{\"v\":7,\"request\":\"Info\"}\n",
        b"{\"request\":\"Info\"}\n",
        b"\xff\xfe\n",
        b"[1,2,3]\n",
    ] {
        let answer = raw_exchange(&mut reader, &mut writer, bad);
        assert_eq!(answer["v"], 1, "{answer}");
        assert!(
            answer["reply"]["Error"]["BadRequest"]["detail"].is_string(),
            "{answer}"
        );
    }
    // Blank lines are skipped; the next request is answered normally.
    let answer = raw_exchange(
        &mut reader,
        &mut writer,
        b"\n  \n{\"v\":1,\"request\":\"Info\"}\n",
    );
    assert_eq!(answer["reply"]["Info"]["conn_table_size"], 4096, "{answer}");
    let answer = raw_exchange(&mut reader, &mut writer, b"{\"v\":7}\n");
    let detail = answer["reply"]["Error"]["BadRequest"]["detail"]
        .as_str()
        .unwrap();
    assert!(detail.contains("version 7"), "{detail}");

    // And a typed client on another connection still works too.
    assert_eq!(client(&f).info().unwrap().version, 0x010203);
}

#[test]
fn connecting_to_a_missing_socket_names_the_path() {
    let dir = TempDir::new("admin-missing").unwrap();
    let path = dir.join("nobody-here.sock");
    let err = AdminClient::connect(&path).unwrap_err();
    match &err {
        AdminError::Transport {
            context, source, ..
        } => {
            assert!(context.contains(&*path.to_string_lossy()), "{context}");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("nobody-here.sock"), "{err}");
}

#[test]
fn a_client_reconnects_after_the_server_restarts() {
    let mut f = start("restart");
    let mut c = client(&f);
    assert!(c.info().is_ok());
    f.running.take().unwrap().stop().unwrap();
    // The old connection is gone: a transport error naming the path.
    let err = c.info().unwrap_err();
    assert!(matches!(err, AdminError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains("admin.sock"), "{err}");
    // A new server on the same path (the stale socket file is replaced).
    let listener = rvs_admin::bind(&f.path).unwrap();
    let admin: SharedAdmin = Arc::new(Mutex::new(Memory::default()));
    f.running = Some(Server::new(listener, admin).unwrap().spawn().unwrap());
    assert_eq!(c.info().unwrap().conn_table_size, 4096);
    // A second bind while it listens is refused.
    assert!(rvs_admin::bind(&f.path).is_err());
}

#[test]
fn shutdown_stops_a_server_with_idle_clients_promptly() {
    let mut f = start("shutdown");
    let idle: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&f.path).unwrap())
        .collect();
    let mut c = client(&f);
    assert!(c.timeouts().is_ok());
    let began = Instant::now();
    f.running.take().unwrap().stop().unwrap();
    assert!(began.elapsed() < Duration::from_secs(5));
    drop(idle);
    assert!(UnixStream::connect(&f.path).is_err());
}

#[test]
fn plain_serve_runs_until_the_listener_is_gone() {
    let dir = TempDir::new("admin-serve").unwrap();
    let path = dir.join("admin.sock");
    let listener = rvs_admin::bind(&path).unwrap();
    let admin: SharedAdmin = Arc::new(Mutex::new(Memory::default()));
    let _thread = std::thread::spawn(move || rvs_admin::serve(listener, admin));
    let mut c = AdminClient::connect(&path).unwrap();
    assert_eq!(c.info().unwrap().conn_table_size, 4096);
    let mut results = Vec::new();
    for i in 0..20u16 {
        let k = ServiceKey::udp(format!("127.0.0.1:{}", 1000 + i).parse().unwrap());
        results.push(c.apply(&Op::AddService(Service::new(k, Scheduler::RoundRobin))));
    }
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(c.services().unwrap().len(), 20);
}
