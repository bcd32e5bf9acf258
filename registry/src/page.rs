//! Keyset pagination: a page holds up to `limit` items after the cursor, in a fixed order on
//! a unique key, so paging never repeats or skips an item while others are added.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::{Error, Result};

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: i64,
    /// The sort key of the last item of the previous page.
    pub after: Option<String>,
}

impl PageRequest {
    /// From the API's `limit` and opaque `cursor` parameters.
    pub fn parse(limit: Option<i64>, cursor: Option<&str>) -> Result<Self> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::Invalid(format!("limit must be between 1 and {MAX_LIMIT}")));
        }
        let after = match cursor {
            Some(c) => {
                Some(URL_SAFE_NO_PAD.decode(c).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad_cursor)?)
            }
            None => None,
        };
        Ok(Self { limit, after })
    }

    pub fn first(limit: i64) -> Self {
        Self { limit, after: None }
    }

    /// What to bind as SQL `LIMIT`: one more than asked, to learn whether a next page exists.
    pub(crate) fn fetch(&self) -> i64 {
        self.limit + 1
    }
}

/// The answer to a cursor this server did not hand out (or one for another list).
pub(crate) fn bad_cursor() -> Error {
    Error::Invalid("cursor is not one this server handed out".into())
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Cuts rows fetched with [`PageRequest::fetch`] to the page and makes the next cursor.
    pub(crate) fn new(mut data: Vec<T>, request: &PageRequest, key: impl Fn(&T) -> String) -> Self {
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let next_cursor = if data.len() > limit {
            data.truncate(limit);
            data.last().map(|last| URL_SAFE_NO_PAD.encode(key(last)))
        } else {
            None
        };
        Self { data, next_cursor }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { data: self.data.into_iter().map(f).collect(), next_cursor: self.next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let request = PageRequest::first(2);
        let page = Page::new(vec!["a", "b", "c"], &request, |s| (*s).to_owned());
        assert_eq!(page.data, ["a", "b"]);
        let next = PageRequest::parse(Some(2), page.next_cursor.as_deref()).expect("own cursor parses");
        assert_eq!(next.after.as_deref(), Some("b"));
        assert!(Page::new(vec!["a"], &request, |s| (*s).to_owned()).next_cursor.is_none());
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(MAX_LIMIT + 1), None).is_err());
        assert!(PageRequest::parse(None, Some("%%%")).is_err());
    }
}
