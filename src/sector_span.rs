//! Cutting a byte range at sector boundaries, the rule every encrypted read and write shares:
//! the aligned middle is handled as whole sectors (one I/O, one batch crypto call, in place in
//! the caller's buffer), an unaligned head or tail as part of one sector through a bounce buffer.

/// A piece of a byte range cut at sector boundaries: either whole sectors starting at
/// `sector` (`within == 0`, `len` a multiple of the sector size) or part of one sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// The sector the piece starts in.
    pub(crate) sector: u64,
    /// Byte offset of the piece within that sector (0 for whole sectors).
    pub(crate) within: usize,
    /// Length of the piece in bytes.
    pub(crate) len: usize,
}

impl Span {
    /// Whether the piece is a run of whole sectors (one I/O and one batch crypto call).
    pub(crate) fn is_whole(&self, sector_size: usize) -> bool {
        self.within == 0 && self.len >= sector_size
    }
}

/// Cuts `len` bytes at byte `offset` into spans: an unaligned head and tail as parts of
/// one sector each, the aligned middle as runs of whole sectors of at most `max_whole` bytes
/// (a multiple of the sector size, or `usize::MAX`).
pub(crate) fn sector_spans(
    offset: u64,
    len: usize,
    sector_size: usize,
    max_whole: usize,
) -> impl Iterator<Item = Span> {
    let mut pos = offset;
    let mut left = len;
    core::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let sector = pos / sector_size as u64;
        let within = (pos % sector_size as u64) as usize;
        let len = if within == 0 && left >= sector_size {
            (left / sector_size * sector_size).min(max_whole)
        } else {
            (sector_size - within).min(left)
        };
        pos += len as u64;
        left -= len;
        Some(Span { sector, within, len })
    })
}

#[cfg(test)]
mod tests {
    use super::{sector_spans, Span};

    #[test]
    fn spans_cut_head_middle_and_tail_at_sector_boundaries() {
        let spans: [Span; 3] = {
            let mut it = sector_spans(1000, 3000, 512, usize::MAX);
            [it.next().unwrap(), it.next().unwrap(), it.next().unwrap()]
        };
        assert_eq!(spans[0], Span { sector: 1, within: 488, len: 24 });
        assert_eq!(spans[1], Span { sector: 2, within: 0, len: 2560 });
        assert_eq!(spans[2], Span { sector: 7, within: 0, len: 416 });
        assert!(!spans[0].is_whole(512) && spans[1].is_whole(512) && !spans[2].is_whole(512));
        assert_eq!(sector_spans(1000, 3000, 512, usize::MAX).count(), 3);
    }

    #[test]
    fn whole_runs_are_capped_at_max_whole() {
        let lens: [usize; 3] = {
            let mut it = sector_spans(0, 40 * 1024, 4096, 16 * 1024).map(|s| s.len);
            [it.next().unwrap(), it.next().unwrap(), it.next().unwrap()]
        };
        assert_eq!(lens, [16 * 1024, 16 * 1024, 8 * 1024]);
    }

    #[test]
    fn a_range_inside_one_sector_is_one_partial_span() {
        let mut it = sector_spans(4100, 10, 4096, usize::MAX);
        assert_eq!(it.next(), Some(Span { sector: 1, within: 4, len: 10 }));
        assert_eq!(it.next(), None);
    }
}
