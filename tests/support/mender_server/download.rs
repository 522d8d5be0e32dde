//! The artifact download link (the "pre-signed" URL of an instruction):
//! ranges, cuts and throttling.

use super::*;
use std::time::SystemTime;

// -- artifact download (the "pre-signed" link; spec 5.4) --------------------

pub(super) fn handle_download(ctx: &mut Ctx, artifact_id: &str, device: &str) -> Response {
    if ctx.req.method != "GET" {
        return ctx.method_not_allowed("GET");
    }
    let mut st = ctx.shared.lock();
    let authorization_sent = ctx.req.header("authorization").is_some();
    if authorization_sent {
        ctx.refuse(
            &mut st,
            400,
            "Authorization header sent to the artifact storage link (the JWT must not leave the API)",
        );
    }
    let query = match parse_query(&ctx.req.query) {
        Ok(q) => q,
        Err(p) => return ctx.refuse(&mut st, 400, p),
    };
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (Some(expire), Some(sig)) = (get("x-men-expire"), get("x-men-signature")) else {
        return ctx.refuse(
            &mut st,
            403,
            "download link without x-men-expire/x-men-signature",
        );
    };
    if link_signature(&ctx.shared.secret, &ctx.req.path, expire) != sig {
        return ctx.refuse(&mut st, 403, "download link signature does not match");
    }
    if let Some(uses) = st.faults.link_uses {
        let link = get("x-men-link").unwrap_or("").to_string();
        let used = st.faults.link_requests.entry(link).or_insert(0);
        *used += 1;
        if *used > uses {
            return error_response(ctx.shared, 403, "the download link expired");
        }
    }
    let Some(dep) = st.deployments.iter().find(|d| d.artifact_id == artifact_id) else {
        return ctx.refuse(&mut st, 404, format!("no artifact {artifact_id}"));
    };
    let data = dep.artifact.clone();
    let deployment_id = dep.id.clone();
    if let Some(dd) = st.devices.get_mut(device).and_then(|d| {
        d.deployments
            .iter_mut()
            .find(|dd| dd.deployment_id == deployment_id)
    }) {
        dd.downloads += 1;
    }
    let total = data.len();
    let range_header = ctx.req.header("range").map(str::to_owned);
    let range = match (&range_header, st.faults.ignore_range) {
        (Some(r), false) => match parse_range(r, total) {
            RangeSpec::Bad => {
                // RFC 9110: an unparsable Range is ignored; still a client bug.
                st.violation(
                    Some(device),
                    &ctx.req.method,
                    &ctx.req.target,
                    format!("malformed Range header {r:?}"),
                );
                None
            }
            other => Some(other),
        },
        _ => None,
    };
    let mut record = DownloadRecord {
        at: SystemTime::now(),
        device: Some(device.to_owned()),
        deployment_id,
        artifact_id: artifact_id.to_owned(),
        range: range_header,
        status: 200,
        start: 0,
        bytes_sent: 0,
        cut: false,
        authorization_sent,
    };
    let (status, start, end) = match range {
        None => (200, 0, total),
        Some(RangeSpec::Unsatisfiable) => {
            record.status = 416;
            let mut resp = error_response(ctx.shared, 416, "range not satisfiable")
                .header("Content-Range", format!("bytes */{total}"));
            resp.download = Some(Box::new(record));
            return resp;
        }
        Some(RangeSpec::Bytes(s, e)) => (206, s, e),
        Some(RangeSpec::Bad) => (200, 0, total),
    };
    let cut_after = st.faults.cuts.pop_front().map(|c| match c {
        Cut::After(n) => n,
        Cut::At(offset) => offset.saturating_sub(start as u64),
    });
    record.status = status;
    record.start = start as u64;
    let mut resp = Response::new(status)
        .header("Content-Type", "application/vnd.mender-artifact")
        .header("Accept-Ranges", "bytes");
    if status == 206 {
        resp = resp.header(
            "Content-Range",
            format!("bytes {start}-{}/{total}", end.saturating_sub(1)),
        );
    }
    resp.body = Body::Artifact {
        data,
        start,
        end,
        cut_after,
        throttle: st.faults.throttle,
    };
    resp.download = Some(Box::new(record));
    resp
}

pub(super) enum RangeSpec {
    /// [start, end) to send.
    Bytes(usize, usize),
    Unsatisfiable,
    Bad,
}

/// `bytes=N-`, `bytes=N-M` or `bytes=-S` (one range only).
pub(super) fn parse_range(header: &str, total: usize) -> RangeSpec {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeSpec::Bad;
    };
    if total == 0 {
        return RangeSpec::Unsatisfiable;
    }
    if spec.contains(',') {
        return RangeSpec::Bad;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Bad;
    };
    let num = |s: &str| -> Option<usize> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeSpec::Bad,
        (true, false) => match num(b) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(suffix) => RangeSpec::Bytes(total.saturating_sub(suffix), total),
            None => RangeSpec::Bad,
        },
        (false, _) => {
            let Some(start) = num(a) else {
                return RangeSpec::Bad;
            };
            let end = if b.is_empty() {
                total
            } else {
                match num(b) {
                    Some(e) if e >= start => e.saturating_add(1).min(total),
                    _ => return RangeSpec::Bad,
                }
            };
            if start >= total {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(start, end)
            }
        }
    }
}
