//! Cluster `discovery`: exactly one source (dns, srv, file, etcd, mesh), checked for syntax only;
//! resolving it is the discovery subsystem's job.

use toml::Spanned;

use super::ctx::{is_host_name, Ctx};
use crate::config::defaults;
use crate::config::model::*;
use crate::config::raw::*;

pub(super) fn discovery(cx: &mut Ctx<'_>, raw: &Spanned<RawDiscovery>) -> EndpointSource {
    let d = raw.get_ref();
    let mut sources: Vec<(&str, std::ops::Range<usize>)> = [
        ("dns", d.dns.as_ref().map(Spanned::span)),
        ("srv", d.srv.as_ref().map(Spanned::span)),
        ("file", d.file.as_ref().map(Spanned::span)),
        ("etcd", d.etcd.as_ref().map(Spanned::span)),
        ("mesh", d.mesh.as_ref().map(Spanned::span)),
    ]
    .into_iter()
    .filter_map(|(k, span)| span.map(|s| (k, s)))
    .collect();
    sources.sort_by_key(|(_, span)| span.start);
    let placeholder = EndpointSource::Static(Vec::new());
    if sources.is_empty() {
        cx.err(
            raw.span(),
            "discovery: needs one of dns, srv, file, etcd, mesh",
        );
        return placeholder;
    }
    for (key, span) in sources.iter().skip(1) {
        cx.err(
            span.clone(),
            format!("discovery.{key}: only one discovery source per cluster"),
        );
    }
    let refresh = cx.positive_duration(
        d.refresh.as_ref(),
        "discovery.refresh",
        defaults::DISCOVERY_REFRESH,
    );
    if let Some(r) = d
        .refresh
        .as_ref()
        .filter(|_| d.dns.is_none() && d.srv.is_none())
    {
        cx.err(r.span(), "discovery.refresh: only applies to dns and srv");
    }
    if let Some(dns) = &d.dns {
        let parsed = dns
            .get_ref()
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok().filter(|&p| p > 0)?)))
            .filter(|(host, _)| is_host_name(host));
        return match parsed {
            Some((host, port)) => EndpointSource::Dns {
                name: host.to_owned(),
                port,
                refresh,
            },
            None => {
                cx.err(
                    dns.span(),
                    format!(
                        "discovery.dns: {:?} is not \"hostname:port\"",
                        dns.get_ref()
                    ),
                );
                placeholder
            }
        };
    }
    if let Some(srv) = &d.srv {
        if !is_host_name(srv.get_ref()) {
            cx.err(
                srv.span(),
                format!("discovery.srv: {:?} is not a DNS name", srv.get_ref()),
            );
        }
        return EndpointSource::Srv {
            name: srv.get_ref().clone(),
            refresh,
        };
    }
    if let Some(file) = &d.file {
        cx.non_empty(file, "discovery.file");
        return EndpointSource::File(cx.path(file.get_ref()));
    }
    if let Some(etcd) = &d.etcd {
        let e = etcd.get_ref();
        if e.endpoints.get_ref().is_empty() {
            cx.err(
                e.endpoints.span(),
                "discovery.etcd.endpoints: must not be empty",
            );
        }
        for url in e.endpoints.get_ref() {
            // The gateway client speaks plain HTTP only: TLS to etcd would need its own CA and
            // client certificate settings, which nothing here has yet. Refused where it is
            // written rather than accepted and left with an empty cluster.
            if url.get_ref().starts_with("https://") {
                cx.err(
                    url.span(),
                    format!(
                        "discovery.etcd.endpoints: {:?}: only http:// is supported (TLS to etcd \
                         is not); use a local gateway such as `etcd grpc-proxy`",
                        url.get_ref()
                    ),
                );
            } else if !url.get_ref().starts_with("http://") {
                cx.err(
                    url.span(),
                    format!(
                        "discovery.etcd.endpoints: {:?} is not an http:// URL",
                        url.get_ref()
                    ),
                );
            }
        }
        cx.non_empty(&e.prefix, "discovery.etcd.prefix");
        let watch_timeout = cx.positive_duration(
            e.watch_timeout.as_ref(),
            "discovery.etcd.watch_timeout",
            defaults::ETCD_WATCH_TIMEOUT,
        );
        return EndpointSource::Etcd {
            endpoints: e
                .endpoints
                .get_ref()
                .iter()
                .map(|u| u.get_ref().clone())
                .collect(),
            prefix: e.prefix.get_ref().clone(),
            watch_timeout,
        };
    }
    match &d.mesh {
        Some(service) => {
            cx.non_empty(service, "discovery.mesh");
            EndpointSource::Mesh(service.get_ref().clone())
        }
        None => placeholder,
    }
}
