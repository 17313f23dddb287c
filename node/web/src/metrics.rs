//! `/metrics` of both daemons: the text their `prometheus-client` registry writes is
//! OpenMetrics 1.0 (`# EOF`, counter families named without `_total`, samples with it). A
//! scraper that asks for OpenMetrics (`Accept: application/openmetrics-text`, as Prometheus
//! does) gets it as is with its own content type; any other client gets the same samples as
//! Prometheus text 0.0.4 (`text/plain; version=0.0.4`), whose `# HELP` and `# TYPE` lines
//! name each counter with its `_total` suffix. So the content type always matches the text,
//! and `promtool check metrics` finds the help of every counter.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of Prometheus text 0.0.4.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer to a scrape: OpenMetrics when the client accepts it, else Prometheus 0.0.4.
pub fn response(openmetrics: String, request: &HeaderMap) -> Response {
    let wants_openmetrics = request
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (ctype, body) = if wants_openmetrics {
        (OPENMETRICS, openmetrics)
    } else {
        (PROMETHEUS, to_prometheus(&openmetrics))
    };
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

/// OpenMetrics text as Prometheus text 0.0.4: counters' `# HELP`/`# TYPE` lines take the
/// `_total` name of their samples, `info` families become gauges of their `_info` samples,
/// `# UNIT` and `# EOF` go (0.0.4 has neither).
pub fn to_prometheus(openmetrics: &str) -> String {
    // Family name -> the name its samples carry in 0.0.4.
    let mut renamed: Vec<(String, String)> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.rsplit_once(' ') {
                Some((name, "counter")) => renamed.push((name.into(), format!("{name}_total"))),
                Some((name, "info")) => renamed.push((name.into(), format!("{name}_info"))),
                _ => {}
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = renamed
                    .iter()
                    .find(|(family, _)| family == name)
                    .map_or(name, |(_, sample)| sample.as_str());
                let tail = if prefix == "# TYPE " && tail == "info" {
                    "gauge"
                } else {
                    tail
                };
                out.push_str(prefix);
                out.push_str(name);
                if !tail.is_empty() {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_total_name() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 3\n\
                  # HELP a_peers Peers.\n# TYPE a_peers gauge\na_peers 2\n\
                  # HELP a_build Build.\n# TYPE a_build info\na_build_info{v=\"1\"} 1\n# EOF\n";
        let p = to_prometheus(om);
        assert_eq!(
            p,
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 3\n\
             # HELP a_peers Peers.\n# TYPE a_peers gauge\na_peers 2\n\
             # HELP a_build_info Build.\n# TYPE a_build_info gauge\na_build_info{v=\"1\"} 1\n"
        );
    }

    #[test]
    fn the_content_type_follows_the_accept_header() {
        let mut h = HeaderMap::new();
        let r = response("# TYPE a counter\n# EOF\n".into(), &h);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROMETHEUS);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
        );
        let r = response("# TYPE a counter\n# EOF\n".into(), &h);
        assert_eq!(r.headers()[header::CONTENT_TYPE], OPENMETRICS);
    }
}
