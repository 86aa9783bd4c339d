//! `/admin/developers`: users with the developer role.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use tollgate_core::StoreError;
use tollgate_core::model::{NewUser, Role};

use super::extract::JsonBody;
use super::{ApiResult, created};
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewDeveloper {
    email: String,
    name: String,
}

pub(super) async fn create(
    State(s): State<AppState>,
    JsonBody(input): JsonBody<NewDeveloper>,
) -> ApiResult<impl IntoResponse> {
    let user = s
        .store
        .create_user(NewUser {
            email: input.email,
            name: input.name,
            role: Some(Role::Developer),
        })
        .await?;
    Ok(created(user))
}

pub(super) async fn list(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(super::list(s.store.list_users(Role::Developer).await?))
}

pub(super) async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let user = s.store.get_user(&id).await?;
    if user.role != Role::Developer {
        return Err(StoreError::NotFound {
            entity: "developer",
            id,
        }
        .into());
    }
    Ok(Json(user))
}
