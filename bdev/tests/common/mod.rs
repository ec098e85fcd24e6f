// SPDX-License-Identifier: Apache-2.0 OR MIT
//! What the block layer's tests share: software controllers' configuration, and the
//! hot-plug test bus. Each test file uses part of it.
#![allow(dead_code)]

use nvme_bdev::layer::{Connector, HotplugSource};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use std::sync::{Arc, Mutex};

/// A software controller's configuration for these tests: `name`, controller ID
/// `cntlid` in subsystem `subnqn`, 64-entry queues, namespace `ns` (shared with other
/// controllers of the subsystem when they are given the same one).
pub fn config(name: &str, subnqn: &str, cntlid: u16, ns: &Arc<Namespace>) -> SoftConfig {
    SoftConfig {
        name: name.into(),
        subnqn: subnqn.into(),
        cntlid,
        mqes: 63,
        namespaces: vec![ns.clone()],
        ..SoftConfig::default()
    }
}

/// A controller on the test bus: its name and the device.
pub type Present = (String, Arc<SoftController>);

/// The controllers "present on the bus" for hot-plug, and the connector of each (a
/// name absent from the bus fails to connect).
#[derive(Clone, Default)]
pub struct Bus(pub Arc<Mutex<Vec<Present>>>);

/// The controllers "present on the bus": what the layer's scan sees.
impl Bus {
    pub fn plug(&self, name: &str, c: &Arc<SoftController>) {
        let mut g = self.0.lock().unwrap();
        g.retain(|(n, _)| n != name);
        g.push((name.to_string(), c.clone()));
    }
    /// Takes `name` off the bus: its controller is removed (registers read all ones).
    pub fn unplug(&self, name: &str) {
        let mut g = self.0.lock().unwrap();
        for (_, c) in g.iter().filter(|(n, _)| n == name) {
            c.faults().simulate_removal();
        }
        g.retain(|(n, _)| n != name);
    }
}

impl HotplugSource for Bus {
    fn scan(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
    fn connector(&self, name: &str) -> Connector {
        let (bus, name) = (self.clone(), name.to_string());
        Arc::new(move || {
            let g = bus.0.lock().unwrap();
            match g.iter().find(|(n, _)| *n == name) {
                Some((_, c)) => Ok(c.clone() as Arc<dyn nvme_driver::bus::Bus>),
                None => Err(nvme_driver::Error::ControllerFailed {
                    device: name.clone(),
                    reason: "not on the test bus".into(),
                }),
            }
        })
    }
}
