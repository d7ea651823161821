//! `[tracing] otlp`'s URL rule, here because the config check applies it and the exporter
//! (`trace`) uses its result: one rule, in the lowest module that needs it.

/// The OTLP/HTTP traces URL for `[tracing] otlp`: `http://host:port` gets the standard
/// `/v1/traces` path, a URL with a path is used as written. Only plain `http` is accepted: the
/// exporter does not speak TLS, and sending spans in clear to an `https` URL would be worse
/// than refusing it.
pub fn otlp_traces_uri(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(format!("scheme {other:?} is not supported (use http://)")),
        None => return Err(format!("{text:?} must start with http://")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{text:?} has no host"))?
        .clone();
    if authority.port_u16().is_none() {
        return Err(format!(
            "{text:?} needs a port (the OTLP/HTTP default is 4318)"
        ));
    }
    let path = match uri.path() {
        "" | "/" => "/v1/traces",
        path => path,
    };
    http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_urls_get_the_traces_path() {
        assert_eq!(
            otlp_traces_uri("http://127.0.0.1:4318").expect("ok"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            otlp_traces_uri("http://collector:4318/custom/traces").expect("ok"),
            "http://collector:4318/custom/traces"
        );
        assert!(otlp_traces_uri("https://c:4318").is_err());
        assert!(otlp_traces_uri("c:4318").is_err());
        assert!(otlp_traces_uri("http://c").is_err());
    }
}
