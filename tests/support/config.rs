//! The one config builder: the TOML most tests run, with only what a test changes spelled out.

use std::net::SocketAddr;

use super::launcher::{Proxy, TestProxy};

/// A config with one listener `public` (127.0.0.1:0), one route from it to one cluster, and
/// that cluster's endpoints. Each setter adds lines to one table; [`ProxyConfig::toml`] writes
/// the file and [`ProxyConfig::start`] runs it in-process.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    cluster: String,
    endpoints: Vec<SocketAddr>,
    runtime: Vec<String>,
    listen: String,
    route: Vec<String>,
    cluster_lines: Vec<String>,
    tail: Vec<String>,
}

impl ProxyConfig {
    /// Cluster `app` of `endpoints` (none: the cluster's lines must name a discovery source).
    pub fn new(endpoints: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            cluster: "app".into(),
            endpoints: endpoints.into_iter().collect(),
            runtime: Vec::new(),
            listen: "127.0.0.1:0".into(),
            route: Vec::new(),
            cluster_lines: Vec::new(),
            tail: Vec::new(),
        }
    }

    /// Names the cluster (default `app`), for tests that read its per-cluster series.
    pub fn cluster(mut self, name: &str) -> Self {
        self.cluster = name.into();
        self
    }

    /// `[runtime] workers` (the default is one per core).
    pub fn workers(mut self, workers: usize) -> Self {
        self.runtime.push(format!("workers = {workers}"));
        self
    }

    /// `[runtime] drain_timeout`, e.g. `"1s"`.
    pub fn drain_timeout(mut self, timeout: &str) -> Self {
        self.runtime.push(format!("drain_timeout = \"{timeout}\""));
        self
    }

    /// The listener's address (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.into();
        self
    }

    /// Lines appended to the route's table (`timeout = "2s"`, `match = { ... }`, `retry = ...`).
    pub fn route(mut self, lines: &str) -> Self {
        self.route.push(lines.into());
        self
    }

    /// Lines appended to the cluster's table (`balance = ...`, `outlier_detection = { ... }`).
    pub fn cluster_lines(mut self, lines: &str) -> Self {
        self.cluster_lines.push(lines.into());
        self
    }

    /// Text appended to the file after the cluster (`[limits]`, `[cache]`, more clusters).
    pub fn tail(mut self, text: &str) -> Self {
        self.tail.push(text.into());
        self
    }

    /// The config file.
    pub fn toml(&self) -> String {
        let mut out = String::new();
        if !self.runtime.is_empty() {
            out += &format!("[runtime]\n{}\n\n", self.runtime.join("\n"));
        }
        out += &format!(
            "[[listeners]]\nname = \"public\"\nlisten = \"{}\"\n\n\
             [[routes]]\nlistener = \"public\"\ncluster = \"{}\"\n{}\n\n\
             [clusters.{}]\n",
            self.listen,
            self.cluster,
            self.route.join("\n"),
            self.cluster
        );
        if !self.endpoints.is_empty() {
            let list: Vec<String> = self.endpoints.iter().map(|a| format!("\"{a}\"")).collect();
            out += &format!("endpoints = [{}]\n", list.join(", "));
        }
        out += &format!(
            "{}\n{}\n",
            self.cluster_lines.join("\n"),
            self.tail.join("\n")
        );
        out
    }

    /// Starts the proxy in-process ([`Proxy::start_toml`]); panics if it does not start.
    pub fn start(&self) -> TestProxy {
        Proxy::start_toml(&self.toml())
    }
}
