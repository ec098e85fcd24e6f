// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The server loop: reactors that poll the connections, this thread accepting on
//! non-blocking listeners and handing each connection to a reactor (round robin),
//! and the drain when asked to stop.

use crate::conn::Conn;
use crate::limits::{MAX_CONNECTIONS, MAX_TRANSFER, QUEUE_ENTRIES};
use crate::reactor::{Connections, Handoff};
use crate::subsystem::Subsystem;
use nvme_bdev::reactor::{ReactorOptions, Reactors};
use nvme_bdev::BlockLayer;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Serves `listeners` (each with the subsystems served on it) from a reactor per core
/// of `cores` until `stop` is set; then stops accepting and drains every connection
/// (the caller shuts the block layer down afterwards). Prints a line per event that
/// is not per command.
pub fn run(
    layer: &BlockLayer,
    listeners: Vec<(TcpListener, Vec<Arc<Subsystem>>)>,
    cores: &[usize],
    stop: &AtomicBool,
) -> Result<(), String> {
    let reactors = Reactors::start(
        ReactorOptions {
            cores: cores.to_vec(),
            pin: true,
            ..ReactorOptions::cores(cores.len())
        },
        layer.qsbr().clone(),
    )
    .map_err(|e| e.to_string())?;
    let mut handoffs = Vec::new();
    for r in 0..reactors.len() {
        let h = Handoff::new(MAX_CONNECTIONS);
        reactors
            .add_poller(r, Box::new(Connections::new(h.clone(), MAX_CONNECTIONS)))
            .map_err(|e| e.to_string())?;
        handoffs.push(h);
    }
    println!(
        "nvme-target: serving on {} reactor(s) (cores {:?}); SIGINT or SIGTERM stops",
        reactors.len(),
        cores
    );

    let (mut next_id, mut live, mut rr) = (0u64, 0usize, 0usize);
    while !stop.load(Ordering::SeqCst) {
        let mut idle = true;
        for (l, subs) in &listeners {
            match l.accept() {
                Ok((sock, peer)) => {
                    idle = false;
                    next_id += 1;
                    if live >= MAX_CONNECTIONS {
                        eprintln!(
                            "nvme-target: connection from {peer} refused: {MAX_CONNECTIONS} connections are open"
                        );
                        continue;
                    }
                    match accept(next_id, sock, peer, subs, layer) {
                        Ok(c) => {
                            live += 1;
                            if let Err(c) = handoffs[rr % handoffs.len()].inbox.push(Box::new(c)) {
                                eprintln!("nvme-target: {}: reactor inbox full", c.describe());
                                live -= 1;
                            }
                            rr += 1;
                        }
                        Err(e) => eprintln!("nvme-target: connection from {peer}: {e}"),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => eprintln!("nvme-target: accept: {e}"),
            }
        }
        for h in &handoffs {
            while let Some(c) = h.retired.pop() {
                drop(c);
                live -= 1;
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    println!("nvme-target: stopping: no new connections; draining {live} connection(s)");
    drop(listeners);
    let stats = reactors.stop().map_err(|e| e.to_string())?;
    let undrained: u64 = stats.iter().map(|s| s.undrained).sum();
    for h in &handoffs {
        while let Some(c) = h.retired.pop() {
            drop(c);
        }
    }
    println!("nvme-target: drained: every connection closed ({undrained} undrained)");
    if undrained > 0 {
        return Err(format!(
            "{undrained} poller(s) had not drained at the stop deadline"
        ));
    }
    Ok(())
}

/// A new connection: non-blocking, no Nagle, its DMA buffer and a channel per
/// namespace of each subsystem served on its listener (set-up work, off the
/// reactors).
fn accept(
    id: u64,
    sock: std::net::TcpStream,
    peer: std::net::SocketAddr,
    subs: &[Arc<Subsystem>],
    layer: &BlockLayer,
) -> Result<Conn, String> {
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    let buf = layer
        .alloc_buffer(QUEUE_ENTRIES * MAX_TRANSFER)
        .map_err(|e| format!("DMA buffer: {e}"))?;
    let mut with_channels = Vec::new();
    for s in subs {
        let mut chans = Vec::new();
        for ns in &s.namespaces {
            chans.push(
                ns.bdev
                    .channel()
                    .map_err(|e| format!("channel of {}: {e}", ns.bdev_name))?,
            );
        }
        with_channels.push((s.clone(), chans));
    }
    Ok(Conn::new(id, sock, peer, with_channels, buf))
}
