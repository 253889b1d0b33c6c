//! OpenAPI schemas (feature `openapi`, for the HTTP API's document) of the leaf types
//! that serialize as their names: a state, a priority, a kind. The structs that hold
//! them derive theirs.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, schema::SchemaType};

use crate::job::{JobKind, Priority};
use crate::state::JobState;

fn names(description: &str, names: Vec<&'static str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .description(Some(description))
        .enum_values(Some(names))
        .into()
}

impl utoipa::PartialSchema for JobState {
    fn schema() -> RefOr<Schema> {
        names(
            "A job's state",
            JobState::ALL.iter().map(|state| state.as_str()).collect(),
        )
    }
}
impl utoipa::ToSchema for JobState {}

impl utoipa::PartialSchema for Priority {
    fn schema() -> RefOr<Schema> {
        names(
            "A job's priority within its queue",
            Priority::ALL
                .iter()
                .map(|priority| priority.as_str())
                .collect(),
        )
    }
}
impl utoipa::ToSchema for Priority {}

impl utoipa::PartialSchema for JobKind {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some("A job kind's name (noop, sleep, provision, ...)"))
            .into()
    }
}
impl utoipa::ToSchema for JobKind {}
