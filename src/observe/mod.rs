//! Observing the daemon: [`health`] and [`metrics`] hold state and counters that any task
//! updates; [`http`] alone serves them, so nothing below the daemon knows HTTP.

pub mod health;
pub mod http;
pub mod metrics;
