//! Keyset pagination: a page of items and the key to continue after.

/// Largest page any list returns.
pub const MAX_LIMIT: i64 = 500;

/// One page of a list; `next` is the key of the last item when more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    pub next: Option<K>,
}

impl<T, K> Page<T, K> {
    /// Builds a page from up to `limit + 1` rows: the extra row only says that more follow.
    pub(crate) fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> K) -> Self {
        let limit = usize::try_from(limit).unwrap_or(0);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more { rows.last().map(key) } else { None };
        Self { items: rows, next }
    }
}

/// Rows to fetch for a page of `limit`: one more, to know whether another page follows.
pub(crate) fn fetch_limit(limit: i64) -> i64 {
    limit.clamp(1, MAX_LIMIT) + 1
}
