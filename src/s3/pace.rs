//! FERRY_MAX_BANDWIDTH on the wire: request bodies are sent in slices, each when the shared
//! schedule ([`crate::core::pace::Pace`]) lets it go, so that every upload together stays at the
//! cap.
//!
//! The body keeps its bytes for signing (`SdkBody::map_preserve_contents`): only how fast they
//! are handed to the connection changes.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

use crate::core::pace::Pace;

/// The process-wide cap, shared by every request.
#[derive(Clone)]
pub struct Pacer {
    pace: Arc<Mutex<Pace>>,
    origin: Instant,
    /// The schedule's slice, fixed by the rate: read without the lock.
    slice: usize,
}

impl Pacer {
    pub fn new(rate: u64) -> Self {
        let pace = Pace::new(rate);
        Pacer {
            slice: usize::try_from(pace.slice()).unwrap_or(usize::MAX),
            pace: Arc::new(Mutex::new(pace)),
            origin: Instant::now(),
        }
    }

    /// How long to wait before sending `bytes`.
    fn reserve(&self, bytes: u64) -> std::time::Duration {
        let now = self.origin.elapsed();
        self.pace.lock().expect("pace lock").reserve(now, bytes)
    }

    fn slice(&self) -> usize {
        self.slice
    }
}

/// The body of an upload request: paced when a cap is set.
pub(super) fn body(bytes: Bytes, pacer: Option<&Pacer>) -> ByteStream {
    let Some(pacer) = pacer.cloned() else {
        return ByteStream::from(bytes);
    };
    if bytes.is_empty() {
        return ByteStream::from(bytes);
    }
    ByteStream::new(SdkBody::from(bytes).map_preserve_contents(move |inner| {
        SdkBody::from_body_1_x(Paced {
            inner,
            pending: Bytes::new(),
            sleep: None,
            ready: 0,
            pacer: pacer.clone(),
        })
    }))
}

/// A body whose data goes out a slice at a time, each when the schedule says.
struct Paced {
    inner: SdkBody,
    /// Bytes taken from the inner body and not yet handed on.
    pending: Bytes,
    /// The wait before the next slice may go.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The length of the slice reserved (and waited for), 0 when none is.
    ready: usize,
    pacer: Pacer,
}

impl Body for Paced {
    type Data = Bytes;
    type Error = aws_sdk_s3::error::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            if this.ready > 0 {
                let slice = this.pending.split_to(this.ready);
                this.ready = 0;
                return Poll::Ready(Some(Ok(Frame::data(slice))));
            }
            if this.pending.is_empty() {
                match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(mut data) => this.pending = data.copy_to_bytes(data.remaining()),
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    },
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    None => return Poll::Ready(None),
                }
                continue;
            }
            let len = this.pending.len().min(this.pacer.slice());
            let wait = this.pacer.reserve(len as u64);
            this.ready = len;
            if !wait.is_zero() {
                this.sleep = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let pending = self.pending.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + pending);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + pending);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_paced_body_holds_its_bytes_and_its_length() {
        let data = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let pacer = Pacer::new(100 * 1024 * 1024);
        let stream = body(data.clone(), Some(&pacer));
        let inner = stream.into_inner();
        assert_eq!(inner.content_length(), Some(200_000));
        // Signing still sees the bytes.
        assert_eq!(inner.bytes(), Some(&data[..]));
        let mut frames = 0;
        let mut got = Vec::new();
        let mut inner = inner;
        while let Some(frame) = inner.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(chunk.len() <= pacer.slice());
            got.extend_from_slice(&chunk);
            frames += 1;
        }
        assert_eq!(got, data);
        assert!(frames >= 200_000 / pacer.slice(), "{frames}");
    }

    #[tokio::test]
    async fn without_a_cap_the_body_is_the_bytes() {
        let data = Bytes::from_static(b"hello");
        let inner = body(data.clone(), None).into_inner();
        assert!(!inner.is_streaming());
        assert_eq!(inner.bytes(), Some(&data[..]));
    }
}
