//! Named predicates over AWS errors, so apply and destroy branch on what an error means rather than
//! matching strings in place. They read the error code AWS returns, which every service sets.

use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};

/// The resource does not exist (any service's spelling of it).
pub fn is_not_found<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(
        err.code(),
        Some(
            "ResourceNotFoundException"
                | "NotFoundException"
                | "NoSuchEntity"
                | "ParameterNotFound"
                | "NotFound"
        )
    )
}

/// The resource exists already (created by an earlier, interrupted run).
pub fn is_already_there<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(
        err.code(),
        Some("ResourceAlreadyExistsException" | "EntityAlreadyExists" | "ParameterAlreadyExists")
    )
}

/// DynamoDB: the table is being created, updated or deleted right now.
pub fn is_in_use<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code() == Some("ResourceInUseException")
}

/// Lambda: a new role is not yet visible to Lambda (IAM is eventually consistent; this lasts
/// seconds after CreateRole).
pub fn is_role_not_ready<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code() == Some("InvalidParameterValueException")
        && err
            .message()
            .is_some_and(|m| m.contains("cannot be assumed") || m.contains("role defined"))
}

/// Lambda: another update of the function is still in progress.
pub fn is_update_in_progress<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code() == Some("ResourceConflictException")
}

/// A readable account of an SDK error, with its code, message and cause chain.
pub fn describe<E: std::error::Error + 'static>(err: E) -> String {
    aws_sdk_lambda::error::DisplayErrorContext(err).to_string()
}
