//! Replies with a status other than 200, a large JSON body sent whole, and the OpenAPI schemas of
//! the core's enums.

use salvo::http::StatusCode;
use salvo::oapi::{
    BasicType, Components, Content, EndpointOutRegister, Object, Operation, RefOr,
    Response as OaResponse, Schema, ToSchema,
};
use salvo::prelude::*;
use serde::Serialize;

use crate::core::model::{FileState, JobState};

/// A JSON body with 201 Created.
pub struct Created<T>(pub T);
/// A JSON body with 202 Accepted.
pub struct Accepted<T>(pub T);
/// 204 No Content.
pub struct NoContent;
/// A JSON body (200) serialized into one buffer and sent whole. salvo's `Json` writes through
/// chunks of 8 KiB, and a list of ten thousand jobs (15 MB) went out as 1,900 of them. Its
/// OpenAPI description is `Json`'s.
pub struct WholeJson<T>(pub T);

impl<T: Serialize + Send> Scribe for WholeJson<T> {
    fn render(self, res: &mut Response) {
        match serde_json::to_vec(&self.0) {
            Ok(body) => {
                res.headers_mut().insert(
                    salvo::http::header::CONTENT_TYPE,
                    salvo::http::HeaderValue::from_static("application/json; charset=utf-8"),
                );
                res.body(body);
            }
            Err(e) => {
                // Views are plain data: this does not happen, and would be ferry's bug.
                tracing::error!(error = %e, "cannot serialize an answer");
                res.status_code(StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    }
}

impl<T: ToSchema> EndpointOutRegister for WholeJson<T> {
    fn register(components: &mut Components, operation: &mut Operation) {
        <Json<T> as EndpointOutRegister>::register(components, operation);
    }
}

impl<T: Serialize + Send> Scribe for Created<T> {
    fn render(self, res: &mut Response) {
        res.status_code(StatusCode::CREATED);
        res.render(Json(self.0));
    }
}

impl<T: Serialize + Send> Scribe for Accepted<T> {
    fn render(self, res: &mut Response) {
        res.status_code(StatusCode::ACCEPTED);
        res.render(Json(self.0));
    }
}

impl Scribe for NoContent {
    fn render(self, res: &mut Response) {
        res.status_code(StatusCode::NO_CONTENT);
    }
}

fn register_json<T: ToSchema>(
    status: &str,
    what: &str,
    components: &mut Components,
    operation: &mut Operation,
) {
    operation.responses.insert(
        status,
        OaResponse::new(what)
            .add_content("application/json", Content::new(T::to_schema(components))),
    );
}

impl<T: ToSchema> EndpointOutRegister for Created<T> {
    fn register(components: &mut Components, operation: &mut Operation) {
        register_json::<T>("201", "Created", components, operation);
    }
}

impl<T: ToSchema> EndpointOutRegister for Accepted<T> {
    fn register(components: &mut Components, operation: &mut Operation) {
        register_json::<T>("202", "Accepted", components, operation);
    }
}

impl EndpointOutRegister for NoContent {
    fn register(_components: &mut Components, operation: &mut Operation) {
        operation
            .responses
            .insert("204", OaResponse::new("Done; no body"));
    }
}

// ---- schemas of the core's enums ----

fn string_enum_schema(
    description: &str,
    values: impl IntoIterator<Item = &'static str>,
) -> RefOr<Schema> {
    Object::new()
        .schema_type(BasicType::String)
        .description(description)
        .enum_values(values)
        .into()
}

impl ToSchema for JobState {
    fn to_schema(_: &mut Components) -> RefOr<Schema> {
        string_enum_schema("A job's state", JobState::ALL.iter().map(|s| s.as_str()))
    }
}

impl ToSchema for FileState {
    fn to_schema(_: &mut Components) -> RefOr<Schema> {
        string_enum_schema(
            "A tracked file's state",
            FileState::ALL.iter().map(|s| s.as_str()),
        )
    }
}
