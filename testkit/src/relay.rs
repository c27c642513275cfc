//! A TCP relay that can go silent: a link that stops carrying bytes
//! without closing, the way a cable pulled between two machines or a
//! dropped route looks to both ends (no FIN, no RST). Whatever is sent
//! meanwhile waits in the relay; `resume` delivers it.
//!
//! Plain threads and blocking sockets: the relay must keep working while a
//! test's own async runtime is blocked, and it is only ever on loopback.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

/// Relays every connection made to [`Relay::addr`] to `upstream`.
pub struct Relay {
    addr: SocketAddr,
    gate: Arc<Gate>,
}

/// Whether bytes may pass.
struct Gate {
    paused: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn wait_open(&self) {
        let mut paused = self.paused.lock().expect("relay gate");
        while *paused {
            paused = self.changed.wait(paused).expect("relay gate");
        }
    }

    fn set(&self, paused: bool) {
        *self.paused.lock().expect("relay gate") = paused;
        self.changed.notify_all();
    }
}

impl Relay {
    /// Listens on a free loopback port and relays to `upstream`.
    pub fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay listens");
        let addr = listener.local_addr().expect("relay address");
        let gate = Arc::new(Gate {
            paused: Mutex::new(false),
            changed: Condvar::new(),
        });
        let accepting = gate.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let gate = accepting.clone();
                thread::spawn(move || connect(client, upstream, gate));
            }
        });
        Relay { addr, gate }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops carrying bytes, in both directions and on new connections,
    /// without closing anything: each end sees a peer that went silent.
    pub fn pause(&self) {
        self.gate.set(true);
    }

    /// Carries bytes again, those held back first.
    pub fn resume(&self) {
        self.gate.set(false);
    }
}

/// Connects a new client upstream (once the gate is open: a silent link
/// does not open connections either) and copies both ways.
fn connect(client: TcpStream, upstream: SocketAddr, gate: Arc<Gate>) {
    gate.wait_open();
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_read), Ok(server_read)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up_gate = gate.clone();
    thread::spawn(move || copy(client_read, server, &up_gate));
    copy(server_read, client, &gate);
}

/// Copies `from` into `to` until either side ends, holding each chunk read
/// while the gate is shut (so nothing more is read either, and the
/// sender's buffers fill as on a dead link).
fn copy(mut from: TcpStream, mut to: TcpStream, gate: &Gate) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        gate.wait_open();
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    // The end that closed is passed on (once the gate lets it, for a
    // silent link carries no FIN either).
    gate.wait_open();
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
