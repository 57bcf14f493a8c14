//! Reading every page of a vendor's list, whatever its paging scheme: page numbers, a
//! cursor, a `next` link, a marker.
//!
//! A plugin says how to fetch one page and where the next one is; [`read_all`] follows the
//! pages until one has no next, and refuses to loop: a next page already read (a vendor
//! whose link points back) or more than [`MAX_PAGES`] pages is an `internal` error, never a
//! list silently cut short (the orphan sweep and the look-up before a create rely on seeing
//! every server).
//!
//! ```ignore
//! use provider_sdk::paging::{self, Page};
//! // page numbers (`next_page: null` on the last page)
//! let servers = paging::read_all(async |page: Option<u32>| {
//!     let path = format!("/servers?per_page=100&page={}", page.unwrap_or(1));
//!     let answer: ServerPage = api.call(HttpMethod::GET, &path, None::<&()>).await?;
//!     Ok(Page { items: answer.servers, next: answer.next_page })
//! })
//! .await?;
//! // a cursor (`meta.links.next`, empty on the last page)
//! let servers = paging::read_all(async |cursor: Option<String>| {
//!     let path = match &cursor {
//!         Some(cursor) => format!("/instances?per_page=100&cursor={}", percent_encode(cursor)),
//!         None => "/instances?per_page=100".to_string(),
//!     };
//!     let answer: InstanceList = api.call(HttpMethod::GET, &path, None::<&()>).await?;
//!     let next = Some(answer.meta.links.next).filter(|next| !next.is_empty());
//!     Ok(Page { items: answer.instances, next })
//! })
//! .await?;
//! ```

use std::fmt::Debug;

use crate::ProviderError;
use crate::http::redact_urls;

/// One page of a list: its items, and where the next page is (`None` on the last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    /// The items on this page.
    pub items: Vec<T>,
    /// The next page: a number, a cursor, a URL; `None` when this page is the last.
    pub next: Option<C>,
}

/// The most pages [`read_all`] reads before it gives up on a list that never ends.
pub const MAX_PAGES: usize = 10_000;

/// Every item of a paged list: `fetch(None)` reads the first page, then `fetch(Some(next))`
/// each following page, until a page has no next. `internal` when a next page repeats one
/// already read or the list runs past [`MAX_PAGES`]; `fetch`'s own errors as they are.
pub async fn read_all<T, C>(
    mut fetch: impl AsyncFnMut(Option<C>) -> Result<Page<T, C>, ProviderError>,
) -> Result<Vec<T>, ProviderError>
where
    C: Clone + PartialEq + Debug,
{
    let mut items = Vec::new();
    let mut read: Vec<C> = Vec::new();
    let mut next = None;
    for _ in 0..MAX_PAGES {
        let page = fetch(next.clone()).await?;
        items.extend(page.items);
        let Some(following) = page.next else {
            return Ok(items);
        };
        if read.contains(&following) {
            return Err(ProviderError::Internal(format!(
                "the vendor's list went back to a page already read ({}) after {} pages",
                shown(&following),
                read.len() + 1
            )));
        }
        read.push(following.clone());
        next = Some(following);
    }
    Err(ProviderError::Internal(format!(
        "the vendor's list did not end within {MAX_PAGES} pages (the last next page: {})",
        next.as_ref().map_or_else(|| "none".to_string(), shown)
    )))
}

/// A cursor for a message: without origins, at most 100 characters.
fn shown<C: Debug>(cursor: &C) -> String {
    redact_urls(&format!("{cursor:?}"))
        .chars()
        .take(100)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::ready;

    /// Page numbers are followed to the last page, in order.
    #[test]
    fn follows_page_numbers_to_the_end() {
        let mut asked = Vec::new();
        let all = ready(read_all(async |page: Option<u32>| {
            let page = page.unwrap_or(1);
            asked.push(page);
            let next = (page < 3).then_some(page + 1);
            Ok(Page {
                items: vec![page * 10, page * 10 + 1],
                next,
            })
        }))
        .unwrap();
        assert_eq!(all, [10, 11, 20, 21, 30, 31]);
        assert_eq!(asked, [1, 2, 3]);
    }

    /// A cursor is passed back as the page gave it; an empty page with a cursor goes on.
    #[test]
    fn follows_cursors_through_empty_pages() {
        let all = ready(read_all(async |cursor: Option<String>| {
            Ok(match cursor.as_deref() {
                None => Page {
                    items: vec!["a"],
                    next: Some("c1".to_string()),
                },
                Some("c1") => Page {
                    items: vec![],
                    next: Some("c2".to_string()),
                },
                Some(_) => Page {
                    items: vec!["b"],
                    next: None,
                },
            })
        }))
        .unwrap();
        assert_eq!(all, ["a", "b"]);
    }

    /// A next page that points back is an error naming it (without its origin), not a loop
    /// and not a short list.
    #[test]
    fn a_next_page_already_read_is_an_error() {
        // Every page, the first included, links to page 2.
        let error = ready(read_all(async |_cursor: Option<String>| {
            Ok(Page {
                items: vec![1],
                next: Some("https://api.vendor.example/v1/servers?page=2".to_string()),
            })
        }))
        .unwrap_err();
        let ProviderError::Internal(message) = error else {
            panic!("{error:?}")
        };
        assert!(message.contains("already read"), "{message}");
        assert!(!message.contains("vendor.example"), "{message}");
    }

    /// A list that never ends stops at MAX_PAGES.
    #[test]
    fn an_endless_list_stops() {
        let mut calls = 0usize;
        let error = ready(read_all(async |page: Option<usize>| {
            calls += 1;
            Ok(Page::<u8, usize> {
                items: vec![],
                next: Some(page.unwrap_or(0) + 1),
            })
        }))
        .unwrap_err();
        assert!(matches!(error, ProviderError::Internal(_)), "{error:?}");
        assert_eq!(calls, MAX_PAGES);
    }

    /// A failing page fails the whole read with its own error.
    #[test]
    fn a_failing_page_fails_the_read() {
        let error = ready(read_all(async |page: Option<u32>| match page {
            None => Ok(Page {
                items: vec![1],
                next: Some(2),
            }),
            Some(_) => Err(ProviderError::RateLimited(Some(1000))),
        }))
        .unwrap_err();
        assert!(matches!(error, ProviderError::RateLimited(Some(1000))));
    }
}
