//! The endpoint entry format shared by the file and etcd sources: `"host:port"` or
//! `{ "address": "host:port", "weight": 2, "zone": "a" }`. Addresses are IP literals, as in the
//! config's `endpoints` (names go through DNS discovery).

use std::net::SocketAddr;

use serde::Deserialize;
use serde_json::Value;

use crate::config::StaticEndpoint;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    address: String,
    weight: Option<u32>,
    zone: Option<String>,
}

/// Parses one entry; the error says what is wrong with it.
pub fn parse_endpoint(value: &Value) -> Result<StaticEndpoint, String> {
    let entry = match value {
        Value::String(address) => Entry {
            address: address.clone(),
            weight: None,
            zone: None,
        },
        Value::Object(_) => Entry::deserialize(value).map_err(|e| format!("{value}: {e}"))?,
        other => {
            return Err(format!(
                "{other}: expected \"host:port\" or {{ \"address\", \"weight\", \"zone\" }}"
            ))
        }
    };
    let address: SocketAddr = entry
        .address
        .parse()
        .map_err(|_| format!("{:?} is not an IP:port address", entry.address))?;
    let weight = entry.weight.unwrap_or(1);
    if weight == 0 {
        return Err(format!("{}: weight must be > 0", entry.address));
    }
    Ok(StaticEndpoint {
        address,
        weight,
        zone: entry.zone.filter(|z| !z.is_empty()),
    })
}

/// Parses a whole file: a JSON array of entries. One bad entry rejects the file, so a half-written
/// or mistyped file never replaces a good set with a partial one.
pub fn parse_endpoint_list(text: &[u8]) -> Result<Vec<StaticEndpoint>, String> {
    let value: Value = serde_json::from_slice(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err("expected a JSON array of endpoints".to_owned());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_endpoint(item).map_err(|e| format!("entry {i}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse() {
        let list = parse_endpoint_list(
            br#"["127.0.0.1:1", {"address": "[::1]:2", "weight": 3, "zone": "b"}]"#,
        )
        .expect("valid list");
        assert_eq!(list[0].address.port(), 1);
        assert_eq!(list[0].weight, 1);
        assert_eq!(list[1].weight, 3);
        assert_eq!(list[1].zone.as_deref(), Some("b"));
    }

    #[test]
    fn bad_entries_reject_the_list() {
        for bad in [
            &br#"{"address": "127.0.0.1:1"}"#[..],
            br#"["localhost:80"]"#,
            br#"[{"address": "127.0.0.1:1", "weight": 0}]"#,
            br#"[{"address": "127.0.0.1:1", "port": 3}]"#,
            br#"[1]"#,
            br#"["127.0.0.1:1""#,
        ] {
            assert!(
                parse_endpoint_list(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_endpoint_list(b"[]").map(|l| l.len()), Ok(0));
    }
}
