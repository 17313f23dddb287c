//! Plain text tables for people.

/// Renders rows under headers, columns padded to their widest cell.
pub(crate) fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// The last `n` characters of a PeerId, for narrow tables.
pub(crate) fn short(id: &str) -> String {
    let n = 10;
    if id.len() <= n {
        id.to_string()
    } else {
        format!("…{}", &id[id.len() - n..])
    }
}

/// The table of a PN's members.
pub(crate) fn members(members: &[cpns_api::MemberView]) -> String {
    let rows = members
        .iter()
        .map(|m| {
            vec![
                m.peer_id.clone(),
                m.mode.clone(),
                match &m.reason {
                    Some(r) => format!("{} ({r})", m.status),
                    None => m.status.clone(),
                },
                m.user.clone(),
                m.device.clone(),
            ]
        })
        .collect::<Vec<_>>();
    render(&["MEMBER", "MODE", "STATUS", "USER", "DEVICE"], &rows)
}
