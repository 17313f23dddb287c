//! ContentDirectory browsing (UPnP ContentDirectory:1 `Browse`) and its DIDL-Lite answers,
//! parsed with roxmltree: the items a MediaServer offers, and the containers to look into.

/// One playable item of a MediaServer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Item {
    /// The item's ObjectID on the device.
    pub(crate) id: String,
    /// `dc:title`.
    pub(crate) title: String,
    /// `upnp:class`, e.g. `object.item.audioItem.musicTrack`.
    pub(crate) class: String,
    /// The first `res`'s URL (`http-get` only).
    pub(crate) url: String,
    /// The MIME type from the `res`'s protocolInfo (`http-get:*:MIME:*`).
    pub(crate) mime: String,
    /// The `res`'s `size` attribute, if given.
    pub(crate) size: Option<u64>,
}

/// What one `Browse` answer holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// Child containers' ObjectIDs.
    pub(crate) containers: Vec<String>,
    /// Child items with an HTTP resource.
    pub(crate) items: Vec<Item>,
}

/// The SOAP arguments of `Browse(ObjectID, BrowseDirectChildren)`, the id escaped.
pub(crate) fn browse_args(object_id: &str, start: u32, count: u32) -> String {
    format!(
        "<ObjectID>{}</ObjectID><BrowseFlag>BrowseDirectChildren</BrowseFlag>\
         <Filter>*</Filter><StartingIndex>{start}</StartingIndex>\
         <RequestedCount>{count}</RequestedCount><SortCriteria></SortCriteria>",
        escape(object_id)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Parses a DIDL-Lite document (the `Result` of `Browse`). Items without an `http-get`
/// resource are left out: the gateway can fetch only those.
pub(crate) fn parse(didl: &str) -> Result<Listing, String> {
    let doc = roxmltree::Document::parse(didl).map_err(|e| format!("DIDL-Lite: {e}"))?;
    let mut out = Listing::default();
    for node in doc.root_element().children().filter(|n| n.is_element()) {
        let Some(id) = node.attribute("id") else {
            continue;
        };
        match node.tag_name().name() {
            "container" => out.containers.push(id.to_string()),
            "item" => {
                let text = |name: &str| {
                    node.children()
                        .find(|c| c.tag_name().name() == name)
                        .and_then(|c| c.text())
                        .map(|t| t.trim().to_string())
                };
                let res = node.children().find(|c| {
                    c.tag_name().name() == "res"
                        && c.attribute("protocolInfo")
                            .is_some_and(|p| p.starts_with("http-get:"))
                });
                let Some(res) = res else { continue };
                let Some(url) = res.text().map(|t| t.trim().to_string()) else {
                    continue;
                };
                let mime = res
                    .attribute("protocolInfo")
                    .and_then(|p| p.split(':').nth(2))
                    .unwrap_or("application/octet-stream")
                    .to_string();
                out.items.push(Item {
                    id: id.to_string(),
                    title: text("title").unwrap_or_else(|| id.to_string()),
                    class: text("class").unwrap_or_default(),
                    url,
                    mime,
                    size: res.attribute("size").and_then(|s| s.parse().ok()),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<DIDL-Lite xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:upnp="urn:schemas-upnp-org:metadata-1-0/upnp/" xmlns="urn:schemas-upnp-org:metadata-1-0/DIDL-Lite/">
<container id="1" parentID="0" restricted="1"><dc:title>Music</dc:title></container>
<item id="64$0" parentID="64" restricted="1"><dc:title>tone0</dc:title><upnp:class>object.item.audioItem.musicTrack</upnp:class><res size="16044" protocolInfo="http-get:*:audio/x-wav:DLNA.ORG_PN=WAV">http://10.0.0.2:8200/MediaItems/21.wav</res></item>
<item id="x" parentID="64"><dc:title>no http</dc:title><res protocolInfo="rtsp-rtp-udp:*:audio/x-wav:*">rtsp://h/x</res></item>
</DIDL-Lite>"#;

    #[test]
    fn a_minidlna_listing_parses_into_containers_and_http_items() {
        let l = parse(SAMPLE).expect("parses");
        assert_eq!(l.containers, vec!["1".to_string()]);
        assert_eq!(l.items.len(), 1, "the rtsp-only item is left out");
        let i = &l.items[0];
        assert_eq!(i.title, "tone0");
        assert_eq!(i.mime, "audio/x-wav");
        assert_eq!(i.size, Some(16044));
        assert_eq!(i.url, "http://10.0.0.2:8200/MediaItems/21.wav");
    }

    #[test]
    fn broken_didl_is_an_error_and_ids_are_escaped() {
        assert!(parse("<DIDL-Lite><item").is_err());
        assert!(browse_args("a<b&c", 0, 10).contains("<ObjectID>a&lt;b&amp;c</ObjectID>"));
    }
}
