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

/// Lambda: a condition of the request no longer holds (PublishVersion's `CodeSha256` is not the
/// function's code any more).
pub fn is_precondition_failed<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code() == Some("PreconditionFailedException")
}

/// SQS: the queue does not exist. SQS speaks JSON now but keeps its older query-protocol codes
/// for compatibility; either spelling may arrive, depending on the endpoint and SDK.
pub fn is_queue_missing<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(
        err.code(),
        Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist")
    )
}

/// SQS: a queue of this name was deleted less than 60 s ago and cannot be created again yet.
pub fn is_queue_deleted_recently<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(
        err.code(),
        Some("AWS.SimpleQueueService.QueueDeletedRecently" | "QueueDeletedRecently")
    )
}

/// SQS: the queue exists with other attributes (CreateQueue is idempotent only for equal ones).
pub fn is_queue_name_taken<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(err.code(), Some("QueueAlreadyExists" | "QueueNameExists"))
}

/// A readable account of an SDK error, with its code, message and cause chain.
pub fn describe<E: std::error::Error + 'static>(err: E) -> String {
    aws_sdk_lambda::error::DisplayErrorContext(err).to_string()
}

/// Lambda: CreateEventSourceMapping found that the function's role may not read the queue —
/// seconds after the role's policy was written, IAM has not propagated it yet.
pub fn is_source_access_not_ready<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code() == Some("InvalidParameterValueException")
        && err
            .message()
            .is_some_and(|m| m.contains("permission") || m.contains("role"))
}

/// Scheduler: a schedule of this name exists already.
pub fn is_conflict<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code() == Some("ConflictException")
}

/// Scheduler: it may not (yet) assume the schedule's role — IAM propagation after CreateRole.
pub fn is_scheduler_role_not_ready<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code() == Some("ValidationException") && err.message().is_some_and(|m| m.contains("role"))
}
