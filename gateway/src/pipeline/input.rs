//! What the pipeline consumes: the facts about devices, in the order they happen. Baselines
//! learn from them, detectors judge them, respond acts on the alerts.
use std::time::SystemTime;

use crate::{
    datapath::{events::DatapathEvent, traffic::TrafficSample},
    device::Mac,
};

/// One fact about a device.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Datapath(DatapathEvent),
    Traffic(TrafficSample),
    /// The inventory classified a device: its generic type (`fingerprint::taxonomy`).
    Class {
        mac: Mac,
        class: String,
    },
}

impl Input {
    pub fn time(&self) -> Option<SystemTime> {
        match self {
            Input::Datapath(event) => Some(event.time()),
            Input::Traffic(sample) => Some(sample.interval_start + sample.interval),
            Input::Class { .. } => None,
        }
    }

    pub fn mac(&self) -> Mac {
        match self {
            Input::Datapath(event) => event.mac(),
            Input::Traffic(sample) => sample.mac,
            Input::Class { mac, .. } => *mac,
        }
    }
}
