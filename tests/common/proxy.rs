//! A small HTTP proxy between ferry and LocalStack: it counts S3 requests at the wire by
//! operation, and injects faults for real (error answers, dropped connections, delays, an
//! outage), so that the tests judge ferry by what crossed the network, not by its own word.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use salvo::conn::{Acceptor, Listener, TcpListener};
use salvo::http::StatusCode;
use salvo::prelude::*;
use salvo::server::ServerHandle;

/// What the proxy does to the requests it sees.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Every nth UploadPart or PutObject is answered with this status and S3 error code.
    pub fail_every: Option<(u64, u16, &'static str)>,
    /// Every nth request (of any kind, counted separately) loses its connection mid-answer.
    pub drop_every: Option<u64>,
    /// Every request waits this long before it is forwarded.
    pub delay: Option<Duration>,
    /// Every UploadPart waits this long before it is forwarded.
    pub part_delay: Option<Duration>,
    /// S3 is unreachable: every connection is dropped.
    pub down: bool,
    /// S3 hangs: every request waits until this moment before it is forwarded.
    pub stall_until: Option<std::time::Instant>,
    /// Every UploadPart numbered above this waits until `release_held_parts` is called: a test
    /// can act while a multipart upload is known to be partway, however slow the machine.
    pub hold_parts_after: Option<u64>,
    /// ListParts answers hold at most this many parts, so that paging is exercised on small files.
    pub list_parts_page: Option<u32>,
    /// The answers that describe a stored object (PutObject's, HeadObject's,
    /// CompleteMultipartUpload's) carry a wrong checksum, as if S3 held other bytes.
    pub corrupt_checksum: bool,
    /// The answers that describe a stored object (PutObject's, HeadObject's,
    /// CompleteMultipartUpload's) carry a wrong ETag, as if S3 held other bytes.
    pub corrupt_etag: bool,
    /// PutObject answers carry neither an ETag nor a checksum, as from a store that gives none.
    pub bare_put_answer: bool,
    /// PutObject answers carry their ETag but no checksum, as from a store that keeps none
    /// (`rclone serve s3`).
    pub put_answer_etag_only: bool,
    /// CompleteMultipartUpload answers carry neither an ETag nor a checksum.
    pub bare_complete_answer: bool,
    /// No answer carries a checksum (UploadPart's, PutObject's, HeadObject's,
    /// CompleteMultipartUpload's), as from a store that neither keeps nor checks them
    /// (gofakes3, the server of `rclone serve s3`).
    pub keeps_no_checksums: bool,
    /// CreateMultipartUpload answers are rooted at `InitiateMultipartUpload`, as gofakes3's
    /// are, instead of S3's `InitiateMultipartUploadResult`.
    pub gofakes3_initiate_root: bool,
    /// Every request of these operations is answered with this status and S3 error code (no
    /// body when the code is empty, as a HEAD answer has none): a store that does not do it
    /// (501, 405), or refuses these credentials (403).
    pub refuse: Vec<(&'static str, u16, &'static str)>,
    /// Requests of these operations hang until the test ends: a store that never answers them.
    pub hang: Vec<&'static str>,
    /// Every request to this bucket (path-style) hangs until the test ends: one job's store
    /// that never answers, beside others that do.
    pub hang_bucket: Option<String>,
    /// Every request that carries a checksum header (`x-amz-checksum-*`,
    /// `x-amz-sdk-checksum-algorithm`) is refused with 400 InvalidArgument, as Backblaze B2
    /// refuses them (no body for a HEAD).
    pub refuse_checksum_headers: bool,
    /// ListParts answers are rooted at `ListPartsResponse`, as moto's are.
    pub moto_list_parts_root: bool,
    /// ListParts answers list the parts without their ETags, as s3s-fs does.
    pub list_parts_without_etags: bool,
    /// Every request that carries this header is answered 501 NotImplemented, as a store
    /// without the feature answers (Garage for `x-amz-tagging`).
    pub refuse_header: Option<&'static str>,
    /// These request headers are dropped on the way, as a store drops what it takes and does
    /// not keep (s3rver's encryption, rclone serve s3's tags). Signatures are not checked by
    /// LocalStack, so the request still goes through.
    pub drop_headers: Vec<&'static str>,
}

const CHECKSUM_HEADERS: [&str; 2] = ["x-amz-checksum-crc32c", "x-amz-checksum-crc32"];
const CHECKSUM_ELEMENTS: [&str; 2] = ["ChecksumCRC32C", "ChecksumCRC32"];

/// A checksum of the same form (a composite keeps its -N) and another value.
fn wrong_checksum(v: &str) -> String {
    match v.split_once('-') {
        Some((_, n)) => format!("AAAAAA==-{n}"),
        None => "AAAAAA==".to_owned(),
    }
}

/// An ETag of the same form (a multipart one keeps its -N) and another value, unquoted.
fn wrong_etag(v: &str) -> String {
    let v = v
        .replace("&quot;", "")
        .replace("&#34;", "")
        .replace('"', "");
    match v.trim().split_once('-') {
        Some((_, n)) => format!("00000000000000000000000000000000-{n}"),
        None => "00000000000000000000000000000000".to_owned(),
    }
}

/// The XML with the text of every `<name>` element replaced by `text(old)`, or with the elements
/// removed when `text` is None.
fn map_elements(xml: &str, name: &str, text: Option<&dyn Fn(&str) -> String>) -> String {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let inner = start + open.len();
        let Some(len) = rest[inner..].find(&close) else {
            break;
        };
        out.push_str(&rest[..start]);
        if let Some(text) = text {
            out.push_str(&open);
            out.push_str(&text(&rest[inner..inner + len]));
            out.push_str(&close);
        }
        rest = &rest[inner + len + close.len()..];
    }
    out.push_str(rest);
    out
}

#[derive(Default)]
struct State {
    upstream: String,
    /// Added to every request, whatever the faults (FERRY_TEST_PROXY_DELAY_MS): a round trip
    /// of a real network for every test that goes through the proxy.
    base_delay: Duration,
    client: reqwest::Client,
    received: Mutex<HashMap<String, u64>>,
    refused_checksums: Mutex<HashMap<String, u64>>,
    forwarded_ok: Mutex<HashMap<String, u64>>,
    faults: Mutex<Faults>,
    data_requests: AtomicU64,
    all_requests: AtomicU64,
    injected: AtomicU64,
    parts_released: AtomicBool,
    parts_release: tokio::sync::Notify,
    /// PutObject and UploadPart requests being handled now, and the most seen at once since
    /// the last `take_peak_data_in_flight`.
    data_in_flight: AtomicU64,
    peak_data_in_flight: AtomicU64,
}

/// Counts a data request in flight while it lives.
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn new(state: &'a State) -> Self {
        let now = state.data_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak_data_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.data_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Proxy {
    pub url: String,
    state: Arc<State>,
    handle: ServerHandle,
}

impl Proxy {
    /// A proxy in front of the tests' S3, making these faults from the start.
    pub async fn with_faults(faults: Faults) -> Proxy {
        let proxy = Proxy::start(&super::s3_endpoint()).await;
        proxy.set_faults(faults);
        proxy
    }

    pub async fn start(upstream: &str) -> Proxy {
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            base_delay: Duration::from_millis(
                std::env::var("FERRY_TEST_PROXY_DELAY_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            ),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            ..State::default()
        });
        let acceptor = TcpListener::new("127.0.0.1:0").bind().await;
        let addr = acceptor.holdings()[0]
            .local_addr
            .clone()
            .into_std()
            .expect("a TCP address");
        let router = Router::new().push(Router::with_path("{**rest}").goal(Forward(state.clone())));
        let router = Router::new().goal(Forward(state.clone())).push(router);
        let server = Server::new(acceptor);
        let handle = server.handle();
        tokio::spawn(server.serve(router));
        Proxy {
            url: format!("http://{addr}"),
            state,
            handle,
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock().unwrap() = faults;
    }

    /// Lets the parts held by `hold_parts_after` go on, and every later one, for good.
    pub fn release_held_parts(&self) {
        self.state.parts_released.store(true, Ordering::SeqCst);
        self.state.parts_release.notify_waiters();
    }

    /// Requests received for an S3 operation (UploadPart, PutObject, CreateMultipartUpload ...).
    pub fn received(&self, operation: &str) -> u64 {
        *self
            .state
            .received
            .lock()
            .unwrap()
            .get(operation)
            .unwrap_or(&0)
    }

    /// Requests of an operation refused for their checksum headers (`refuse_checksum_headers`).
    pub fn refused_for_checksums(&self, operation: &str) -> u64 {
        *self
            .state
            .refused_checksums
            .lock()
            .unwrap()
            .get(operation)
            .unwrap_or(&0)
    }

    /// Requests of an operation that LocalStack answered with a success.
    pub fn succeeded(&self, operation: &str) -> u64 {
        *self
            .state
            .forwarded_ok
            .lock()
            .unwrap()
            .get(operation)
            .unwrap_or(&0)
    }

    /// The most PutObject and UploadPart requests handled at once since the last call: how many
    /// uploads ferry had in flight at the wire.
    pub fn take_peak_data_in_flight(&self) -> u64 {
        let now = self.state.data_in_flight.load(Ordering::SeqCst);
        self.state.peak_data_in_flight.swap(now, Ordering::SeqCst)
    }

    /// How many requests the proxy failed, dropped or refused on purpose.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.handle.stop_forceful();
    }
}

/// The part number an UploadPart's query names.
fn part_number(query: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("partNumber="))
        .and_then(|n| n.parse().ok())
}

/// Names the S3 operation of a path-style request.
pub fn operation(method: &str, path: &str, query: &str) -> &'static str {
    let has = |name: &str| {
        query
            .split('&')
            .any(|kv| kv.split('=').next() == Some(name))
    };
    // "/bucket/key"; "/bucket" and "/bucket/" name the bucket alone.
    let has_key = path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    match method {
        "PUT" if has("partNumber") && has("uploadId") => "UploadPart",
        "PUT" if has("tagging") => "PutObjectTagging",
        "GET" if has("tagging") => "GetObjectTagging",
        "PUT" if has_key => "PutObject",
        "PUT" => "CreateBucket",
        "POST" if has("uploads") => "CreateMultipartUpload",
        "POST" if has("uploadId") => "CompleteMultipartUpload",
        "DELETE" if has("uploadId") => "AbortMultipartUpload",
        "DELETE" => "Delete",
        "GET" if has("uploadId") => "ListParts",
        "GET" if has("uploads") => "ListMultipartUploads",
        "HEAD" if has_key => "HeadObject",
        "HEAD" => "HeadBucket",
        "GET" if path == "/" => "ListBuckets",
        _ => "Other",
    }
}

struct Forward(Arc<State>);

/// Ends the answer with a broken connection.
fn drop_connection(res: &mut Response) {
    res.status_code(StatusCode::OK);
    res.headers_mut()
        .insert("content-length", "1000".parse().unwrap());
    res.stream(futures_util::stream::once(async {
        Err::<bytes::Bytes, std::io::Error>(std::io::Error::other(
            "connection dropped by the test proxy",
        ))
    }));
}

#[async_trait]
impl Handler for Forward {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let state = &self.0;
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let op = match operation(&method, &path, &query) {
            "PutObject" if req.headers().contains_key("x-amz-copy-source") => "CopyObject",
            op => op,
        };
        *state
            .received
            .lock()
            .unwrap()
            .entry(op.to_owned())
            .or_default() += 1;
        let _in_flight = matches!(op, "PutObject" | "UploadPart").then(|| InFlight::new(state));
        let body = req
            .payload_with_max_size(256 * 1024 * 1024)
            .await
            .cloned()
            .unwrap_or_default();
        let faults = state.faults.lock().unwrap().clone();
        let n = state.all_requests.fetch_add(1, Ordering::Relaxed) + 1;
        if faults.down {
            state.injected.fetch_add(1, Ordering::Relaxed);
            drop_connection(res);
            return;
        }
        if let Some(until) = faults.stall_until {
            state.injected.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep_until(until.into()).await;
        }
        if op == "UploadPart"
            && let Some(after) = faults.hold_parts_after
            && part_number(&query).is_some_and(|n| n > after)
        {
            loop {
                // Registered before the flag is read, so that a release in between is not missed.
                let released = state.parts_release.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if state.parts_released.load(Ordering::SeqCst) {
                    break;
                }
                released.await;
            }
        }
        if faults.refuse_checksum_headers
            && let Some(name) = req
                .headers()
                .keys()
                .map(|k| k.as_str().to_owned())
                .find(|k| k.starts_with("x-amz-checksum-") || k == "x-amz-sdk-checksum-algorithm")
        {
            state.injected.fetch_add(1, Ordering::Relaxed);
            *state
                .refused_checksums
                .lock()
                .unwrap()
                .entry(op.to_owned())
                .or_default() += 1;
            res.status_code(StatusCode::BAD_REQUEST);
            if method != "HEAD" {
                res.headers_mut()
                    .insert("content-type", "application/xml".parse().unwrap());
                res.body(format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><Error><Code>InvalidArgument</Code><Message>Unsupported header '{name}' received for this API call.</Message></Error>"
                ));
            }
            return;
        }
        if let Some(header) = faults.refuse_header
            && req.headers().contains_key(header)
        {
            state.injected.fetch_add(1, Ordering::Relaxed);
            res.status_code(StatusCode::NOT_IMPLEMENTED);
            res.headers_mut()
                .insert("content-type", "application/xml".parse().unwrap());
            res.body(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented ({header})</Message></Error>"
            ));
            return;
        }
        if faults.hang.contains(&op)
            || faults
                .hang_bucket
                .as_deref()
                .is_some_and(|b| path.trim_start_matches('/').split('/').next() == Some(b))
        {
            state.injected.fetch_add(1, Ordering::Relaxed);
            std::future::pending::<()>().await;
        }
        if let Some((_, status, code)) = faults.refuse.iter().find(|(o, _, _)| *o == op) {
            state.injected.fetch_add(1, Ordering::Relaxed);
            res.status_code(StatusCode::from_u16(*status).unwrap());
            if !code.is_empty() {
                res.headers_mut()
                    .insert("content-type", "application/xml".parse().unwrap());
                res.body(format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>refused by the test proxy</Message></Error>"
                ));
            }
            return;
        }
        if let Some(delay) = faults.delay {
            tokio::time::sleep(delay).await;
        }
        if !state.base_delay.is_zero() {
            tokio::time::sleep(state.base_delay).await;
        }
        if op == "UploadPart"
            && let Some(delay) = faults.part_delay
        {
            tokio::time::sleep(delay).await;
        }
        if let Some(every) = faults.drop_every
            && n.is_multiple_of(every)
        {
            state.injected.fetch_add(1, Ordering::Relaxed);
            drop_connection(res);
            return;
        }
        if matches!(op, "UploadPart" | "PutObject")
            && let Some((every, status, code)) = faults.fail_every
        {
            let m = state.data_requests.fetch_add(1, Ordering::Relaxed) + 1;
            if m.is_multiple_of(every) {
                state.injected.fetch_add(1, Ordering::Relaxed);
                res.status_code(StatusCode::from_u16(status).unwrap());
                res.headers_mut()
                    .insert("content-type", "application/xml".parse().unwrap());
                res.body(format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
                ));
                return;
            }
        }

        let mut query = query;
        if op == "ListParts"
            && let Some(page) = faults.list_parts_page
        {
            query = query
                .split('&')
                .filter(|kv| !kv.starts_with("max-parts="))
                .chain(std::iter::once(format!("max-parts={page}").as_str()))
                .collect::<Vec<_>>()
                .join("&");
        }
        let url = format!(
            "{}{}{}",
            state.upstream,
            path,
            if query.is_empty() {
                String::new()
            } else {
                format!("?{query}")
            }
        );
        let mut forward = state
            .client
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        // The Host header goes through as ferry sent it: it is signed, and a store that checks
        // signatures (SeaweedFS, MinIO) refuses a request whose Host changed on the way.
        for (name, value) in req.headers() {
            if !matches!(
                name.as_str(),
                "content-length" | "connection" | "transfer-encoding"
            ) && !faults.drop_headers.contains(&name.as_str())
            {
                forward = forward.header(name.as_str(), value.as_bytes());
            }
        }
        let answer = match forward.body(body).send().await {
            Ok(a) => a,
            Err(_) => {
                drop_connection(res);
                return;
            }
        };
        let status = answer.status().as_u16();
        if (200..300).contains(&status) {
            *state
                .forwarded_ok
                .lock()
                .unwrap()
                .entry(op.to_owned())
                .or_default() += 1;
        }
        res.status_code(StatusCode::from_u16(status).unwrap());
        let head = method == "HEAD";
        for (name, value) in answer.headers() {
            // A HEAD answer keeps its Content-Length: it is the object's size.
            let skip = matches!(name.as_str(), "connection" | "transfer-encoding")
                || (name.as_str() == "content-length" && !head);
            if !skip && let Ok(v) = salvo::http::HeaderValue::from_bytes(value.as_bytes()) {
                res.headers_mut().append(
                    salvo::http::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(),
                    v,
                );
            }
        }
        let put_fault = faults.bare_put_answer || faults.put_answer_etag_only;
        if faults.keeps_no_checksums || (op == "PutObject" && put_fault) {
            state.injected.fetch_add(1, Ordering::Relaxed);
            for name in CHECKSUM_HEADERS {
                res.headers_mut().remove(name);
            }
        }
        if op == "PutObject" && faults.bare_put_answer {
            res.headers_mut().remove("etag");
        }
        let describes_object = matches!(op, "HeadObject" | "PutObject");
        if describes_object && faults.corrupt_checksum {
            state.injected.fetch_add(1, Ordering::Relaxed);
            for name in CHECKSUM_HEADERS {
                if let Some(v) = res.headers().get(name).and_then(|v| v.to_str().ok()) {
                    let wrong = wrong_checksum(v);
                    res.headers_mut().insert(name, wrong.parse().unwrap());
                }
            }
        }
        if describes_object && faults.corrupt_etag {
            state.injected.fetch_add(1, Ordering::Relaxed);
            if let Some(v) = res.headers().get("etag").and_then(|v| v.to_str().ok()) {
                let wrong = format!("\"{}\"", wrong_etag(v));
                res.headers_mut().insert("etag", wrong.parse().unwrap());
            }
        }
        let mut bytes = answer.bytes().await.unwrap_or_default();
        if op == "CreateMultipartUpload" && status == 200 && faults.gofakes3_initiate_root {
            state.injected.fetch_add(1, Ordering::Relaxed);
            let xml = String::from_utf8_lossy(&bytes)
                .replace("InitiateMultipartUploadResult", "InitiateMultipartUpload");
            bytes = bytes::Bytes::from(xml);
        }
        if op == "ListParts" && status == 200 {
            let mut xml = String::from_utf8_lossy(&bytes).into_owned();
            if faults.moto_list_parts_root {
                state.injected.fetch_add(1, Ordering::Relaxed);
                xml = xml.replace("ListPartsResult", "ListPartsResponse");
            }
            if faults.list_parts_without_etags {
                state.injected.fetch_add(1, Ordering::Relaxed);
                xml = map_elements(&xml, "ETag", None);
            }
            bytes = bytes::Bytes::from(xml);
        }
        if op == "CompleteMultipartUpload" && status == 200 {
            let mut xml = String::from_utf8_lossy(&bytes).into_owned();
            if faults.bare_complete_answer || faults.keeps_no_checksums {
                for name in CHECKSUM_ELEMENTS {
                    xml = map_elements(&xml, name, None);
                }
            }
            if faults.bare_complete_answer {
                xml = map_elements(&xml, "ETag", None);
            }
            if faults.corrupt_checksum {
                for name in CHECKSUM_ELEMENTS {
                    xml = map_elements(&xml, name, Some(&wrong_checksum));
                }
            }
            if faults.corrupt_etag {
                xml = map_elements(
                    &xml,
                    "ETag",
                    Some(&|v: &str| format!("&quot;{}&quot;", wrong_etag(v))),
                );
            }
            if xml.as_bytes() != bytes.as_ref() {
                state.injected.fetch_add(1, Ordering::Relaxed);
                bytes = bytes::Bytes::from(xml);
            }
        }
        if !head {
            res.body(bytes.to_vec());
        }
    }
}
