//! Answers of S3-compatible stores that depart from S3's format, mended before the SDK reads them.
//!
//! - gofakes3, the S3 server inside `rclone serve s3` (and other Go test and edge stores), names
//!   the root of its CreateMultipartUpload answer `InitiateMultipartUpload`; S3's is
//!   `InitiateMultipartUploadResult`.
//! - moto names the root of its ListParts answer `ListPartsResponse`; S3's is `ListPartsResult`.
//!
//! botocore, the Go SDK and rclone read them anyway; the Rust SDK's parser checks the root's name
//! and refuses the answer (no multipart upload could start on gofakes3, and no resume could list
//! its parts on moto). The interceptor renames the root of one operation's successful answers;
//! everything else in the answer is read as S3's.

use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::primitives::SdkBody;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

const INITIATE: &str = "InitiateMultipartUpload";
const INITIATE_RESULT: &str = "InitiateMultipartUploadResult";

/// Reads an answer whose root is `from` as S3's, rooted at `to`.
#[derive(Debug)]
pub(super) struct RenameRoot {
    name: &'static str,
    from: &'static str,
    to: &'static str,
}

/// CreateMultipartUpload, as gofakes3 answers it.
pub(super) const INITIATE_ROOT: RenameRoot = RenameRoot {
    name: "ferry::InitiateResultRoot",
    from: INITIATE,
    to: INITIATE_RESULT,
};

/// ListParts, as moto answers it.
pub(super) const LIST_PARTS_ROOT: RenameRoot = RenameRoot {
    name: "ferry::ListPartsResultRoot",
    from: "ListPartsResponse",
    to: "ListPartsResult",
};

impl Intercept for RenameRoot {
    fn name(&self) -> &'static str {
        self.name
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        if response.status().is_success() {
            let body = response.take_body();
            *response.body_mut() = renamed_root(body, self.from, self.to);
        }
        Ok(())
    }
}

/// The body, read whole (an answer of a few hundred bytes), with its root renamed when it is `from`.
fn renamed_root(body: SdkBody, from: &'static str, to: &'static str) -> SdkBody {
    let whole = futures_util::stream::once(async move {
        let bytes = body.collect().await?.to_bytes();
        let bytes = match rename_root(&bytes, from, to) {
            Some(renamed) => Bytes::from(renamed),
            None => bytes,
        };
        Ok::<_, BoxError>(Frame::data(bytes))
    });
    SdkBody::from_body_1_x(StreamBody::new(whole))
}

/// The XML document with its root element renamed from `from` to `to`, or None when its root is
/// not `from` (or the document is not one this can read: then the SDK reports it as it is).
fn rename_root(xml: &[u8], from: &str, to: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(xml).ok()?;
    let open = root_start(text)?;
    let name_end = open + 1 + from.len();
    let after = text.get(open + 1..)?;
    if !after.starts_with(from) {
        return None;
    }
    // The name must end there: `<InitiateMultipartUploadResult>` is already right.
    match text[name_end..].chars().next() {
        Some(c) if c == '>' || c.is_ascii_whitespace() => {}
        _ => return None,
    }
    let closing = format!("</{from}>");
    let close = text.rfind(&closing)?;
    if close < name_end || !text[close + closing.len()..].trim().is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 2 * to.len());
    out.push_str(&text[..=open]);
    out.push_str(to);
    out.push_str(&text[name_end..close]);
    out.push_str("</");
    out.push_str(to);
    out.push('>');
    out.push_str(&text[close + closing.len()..]);
    Some(out.into_bytes())
}

/// Where the root element's `<` is: after the declaration, comments, a doctype and whitespace.
fn root_start(text: &str) -> Option<usize> {
    let mut at = 0;
    loop {
        let rest = &text[at..];
        let trimmed = rest.trim_start();
        at += rest.len() - trimmed.len();
        let skip_to = if trimmed.starts_with("<?") {
            "?>"
        } else if trimmed.starts_with("<!--") {
            "-->"
        } else if trimmed.starts_with("<!") {
            ">"
        } else if trimmed.starts_with('<') {
            return Some(at);
        } else {
            return None;
        };
        at += trimmed.find(skip_to)? + skip_to.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renamed(xml: &str) -> Option<String> {
        rename_root(xml.as_bytes(), INITIATE, INITIATE_RESULT)
            .map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn the_gofakes3_root_is_renamed_and_nothing_else_changes() {
        let gofakes3 = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUpload>\n  \
            <Bucket>b</Bucket>\n  <Key>InitiateMultipartUpload/k</Key>\n  <UploadId>66-7d</UploadId>\n\
            </InitiateMultipartUpload>";
        assert_eq!(
            renamed(gofakes3).as_deref(),
            Some(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult>\n  \
                <Bucket>b</Bucket>\n  <Key>InitiateMultipartUpload/k</Key>\n  <UploadId>66-7d</UploadId>\n\
                </InitiateMultipartUploadResult>"
            )
        );
        let with_namespace = "<!-- a comment --><InitiateMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
            <UploadId>u</UploadId></InitiateMultipartUpload>\n";
        assert_eq!(
            renamed(with_namespace).as_deref(),
            Some(
                "<!-- a comment --><InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                <UploadId>u</UploadId></InitiateMultipartUploadResult>\n"
            )
        );
    }

    #[test]
    fn motos_list_parts_root_is_read_as_s3s() {
        let moto = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListPartsResponse xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Part><PartNumber>1</PartNumber></Part></ListPartsResponse>";
        let out = rename_root(moto.as_bytes(), LIST_PARTS_ROOT.from, LIST_PARTS_ROOT.to).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("<ListPartsResult xmlns="), "{out}");
        assert!(out.ends_with("</ListPartsResult>"), "{out}");
    }

    #[test]
    fn s3s_own_answers_and_other_documents_are_left_alone() {
        for xml in [
            "<?xml version=\"1.0\"?><InitiateMultipartUploadResult><UploadId>u</UploadId></InitiateMultipartUploadResult>",
            "<Error><Code>NoSuchBucket</Code></Error>",
            "<InitiateMultipartUpload><UploadId>u</UploadId>",
            "<InitiateMultipartUpload/>",
            "not xml at all",
            "",
        ] {
            assert_eq!(renamed(xml), None, "{xml}");
        }
        assert_eq!(rename_root(&[0xff, 0xfe], INITIATE, INITIATE_RESULT), None);
    }
}
