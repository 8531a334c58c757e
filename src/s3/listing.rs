//! Listing a prefix (ListObjectsV2, every page) and deleting an object: what a resync and a
//! prune ask of a store.

use std::collections::HashMap;

use crate::core::lifecycle::Listed;

/// What a listing of a prefix cost: the pages (requests) it took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Every object under the prefix by key.
    pub objects: HashMap<String, Listed>,
    pub pages: u64,
}

impl super::ObjectStore {
    /// Every object under `prefix`, following every page. A store that answers a truncated
    /// page without a continuation token (or the same token again) ends the listing, rather
    /// than loop.
    pub async fn list_objects(&self, bucket: &str, prefix: &str) -> super::Result<Listing> {
        let mut listing = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retrying("ListObjectsV2", || async {
                    self.client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(prefix)
                        .set_continuation_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| super::error::classify(e, Some(bucket)))
                })
                .await?;
            listing.pages += 1;
            for o in page.contents() {
                if o.e_tag().is_some_and(|e| e.contains('-')) {
                    self.lists_multipart_etags
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(key) = o.key() {
                    listing.objects.insert(
                        key.to_owned(),
                        Listed {
                            size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                            etag: o.e_tag().map(str::to_owned),
                        },
                    );
                }
            }
            let next = page.next_continuation_token().map(str::to_owned);
            if page.is_truncated() != Some(true) || next.is_none() || next == token {
                return Ok(listing);
            }
            token = next;
        }
    }

    /// Whether a listing has shown a multipart ETag (`…-N`): then a plain ETag listed for an
    /// object completed as a multipart upload means it was overwritten, not that the store
    /// lists multipart objects by their whole MD5 (rclone serve s3).
    pub fn lists_multipart_etags(&self) -> bool {
        self.lists_multipart_etags
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Deletes an object (S3 answers 204 for one already gone).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> super::Result<()> {
        self.retrying("DeleteObject", || async {
            self.client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| super::error::classify(e, Some(bucket)))
        })
        .await
    }
}
