//! Which byte ranges of the data member an adaptive install asks for: the
//! frames the device lacks, neighbours merged into one request. Storage
//! behind Mender's download links (S3 in particular) answers one range per
//! request, so a request is one run of frames; round trips are what costs
//! on a slow link, so small gaps of frames the device holds are fetched
//! along rather than split into another request (docs/artifacts.md,
//! "Adaptive installs").

/// Frames the device holds between two it lacks are fetched along when
/// they take at most this many bytes: about one 16 KiB chunk compressed.
pub(super) const MERGE_GAP: u64 = 8 << 10;
/// The most bytes one request asks for. A cut connection re-asks from the
/// frame it reached, so this bounds what a retry repeats, not memory (the
/// body is decoded frame by frame as it arrives).
pub(super) const MAX_REQUEST: u64 = 16 << 20;
/// The most requests one install makes: past it the gaps that are merged
/// grow until the plan fits. 4,096 round trips of 100 ms are 7 minutes.
pub(super) const MAX_REQUESTS: usize = 4096;

/// One request: frames `first..=last` (frame numbers, see [`Frames`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Request {
    pub first: usize,
    pub last: usize,
}

/// The frames of a chunked data member, in order: the inner tar header,
/// one per chunk, the tar trailer. `spans[f]` is frame `f`'s offset and
/// length within the data member.
pub(super) struct Frames {
    pub spans: Vec<(u64, u64)>,
}

impl Frames {
    pub(super) fn span(&self, first: usize, last: usize) -> (u64, u64) {
        let start = self.spans[first].0;
        let (o, l) = self.spans[last];
        (start, o + l)
    }
}

/// Groups the frames `needed` says are missing into requests. Frames are
/// never split; a frame larger than [`MAX_REQUEST`] is a request of its own.
pub(super) fn plan(frames: &Frames, needed: &dyn Fn(usize) -> bool) -> Vec<Request> {
    let mut gap = MERGE_GAP;
    loop {
        let requests = group(frames, needed, gap);
        // Bounded: each round doubles the gap, and a gap as large as the
        // data member merges everything up to MAX_REQUEST.
        let whole = frames.spans.last().map_or(0, |(o, l)| o + l);
        if requests.len() <= MAX_REQUESTS || gap > whole {
            return requests;
        }
        gap = gap.saturating_mul(2);
    }
}

fn group(frames: &Frames, needed: &dyn Fn(usize) -> bool, gap: u64) -> Vec<Request> {
    let mut requests: Vec<Request> = Vec::new();
    for f in (0..frames.spans.len()).filter(|&f| needed(f)) {
        if let Some(last) = requests.last_mut() {
            let (start, end) = frames.span(last.first, last.last);
            let (o, l) = frames.spans[f];
            if o - end <= gap && o + l - start <= MAX_REQUEST {
                last.last = f;
                continue;
            }
        }
        requests.push(Request { first: f, last: f });
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(lens: &[u64]) -> Frames {
        let mut at = 0;
        Frames {
            spans: lens
                .iter()
                .map(|&l| {
                    let s = (at, l);
                    at += l;
                    s
                })
                .collect(),
        }
    }

    #[test]
    fn neighbours_and_small_gaps_merge_large_gaps_split() {
        let f = frames(&[100, 5000, 5000, 20000, 5000, 100]);
        // Missing: 0, 1, 2 (adjacent), 4 (after a 20,000-byte gap), 5.
        let need = |i: usize| i != 3;
        assert_eq!(
            plan(&f, &need),
            vec![Request { first: 0, last: 2 }, Request { first: 4, last: 5 }]
        );
        // A gap of one 5,000-byte frame is fetched along.
        let need = |i: usize| i != 2;
        assert_eq!(plan(&f, &need), vec![Request { first: 0, last: 5 }]);
        let none = |_: usize| false;
        assert!(plan(&f, &none).is_empty());
    }

    #[test]
    fn requests_are_bounded_in_size_and_count() {
        let f = frames(&vec![1 << 20; 40]);
        let all = |_: usize| true;
        let requests = plan(&f, &all);
        for r in &requests {
            let (s, e) = f.span(r.first, r.last);
            assert!(e - s <= MAX_REQUEST);
        }
        assert_eq!(requests.len(), 3);
        // Every other frame of 10,000 tiny ones: 5,000 requests at the
        // default gap, fewer than MAX_REQUESTS once gaps are merged.
        let f = frames(&vec![MERGE_GAP + 1; 10_000]);
        let odd = |i: usize| i % 2 == 1;
        let requests = plan(&f, &odd);
        assert!(requests.len() <= MAX_REQUESTS, "{}", requests.len());
        let covered: usize = requests.iter().map(|r| r.last - r.first + 1).sum();
        assert!(covered >= 5_000);
    }
}
