//! Named predicates over AWS SDK errors, so callers never match on error strings.

use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use chat_core::ports::PortError;

/// `ConditionalCheckFailedException` on a single-item update.
pub fn is_condition_failed<R>(err: &SdkError<UpdateItemError, R>) -> bool {
    matches!(
        err.as_service_error(),
        Some(UpdateItemError::ConditionalCheckFailedException(_))
    )
}

/// A cancelled transaction: the cancellation reason code per item (`None` where that item passed).
pub fn transaction_cancellations<R>(
    err: &SdkError<TransactWriteItemsError, R>,
) -> Option<Vec<Option<String>>> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => Some(
            e.cancellation_reasons()
                .iter()
                .map(|r| r.code().filter(|c| *c != "None").map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

/// Whether the transaction failed because item `index`'s condition failed.
pub fn is_condition_failed_at<R>(err: &SdkError<TransactWriteItemsError, R>, index: usize) -> bool {
    transaction_cancellations(err).is_some_and(|reasons| {
        reasons
            .get(index)
            .is_some_and(|r| r.as_deref() == Some("ConditionalCheckFailed"))
    })
}

/// Whether a transaction was cancelled by any failed condition.
pub fn is_any_condition_failed<R>(err: &SdkError<TransactWriteItemsError, R>) -> bool {
    transaction_cancellations(err).is_some_and(|reasons| {
        reasons
            .iter()
            .any(|r| r.as_deref() == Some("ConditionalCheckFailed"))
    })
}

/// Whether a transaction lost to another one writing the same items at the same moment.
pub fn is_transaction_conflict<R>(err: &SdkError<TransactWriteItemsError, R>) -> bool {
    transaction_cancellations(err).is_some_and(|reasons| {
        reasons
            .iter()
            .any(|r| r.as_deref() == Some("TransactionConflict"))
    })
}

/// The table exists already.
pub fn is_table_in_use<R>(err: &SdkError<CreateTableError, R>) -> bool {
    matches!(
        err.as_service_error(),
        Some(CreateTableError::ResourceInUseException(_))
    )
}

/// 410 Gone: the connection no longer exists.
pub fn is_gone<R>(err: &SdkError<PostToConnectionError, R>) -> bool {
    matches!(
        err.as_service_error(),
        Some(PostToConnectionError::GoneException(_))
    )
}

/// 410 Gone from `GetConnection`.
pub fn is_get_gone<R>(
    err: &SdkError<aws_sdk_apigatewaymanagement::operation::get_connection::GetConnectionError, R>,
) -> bool {
    matches!(
        err.as_service_error(),
        Some(aws_sdk_apigatewaymanagement::operation::get_connection::GetConnectionError::GoneException(_))
    )
}

/// 410 Gone from `DeleteConnection`.
pub fn is_delete_gone<R>(
    err: &SdkError<
        aws_sdk_apigatewaymanagement::operation::delete_connection::DeleteConnectionError,
        R,
    >,
) -> bool {
    matches!(
        err.as_service_error(),
        Some(aws_sdk_apigatewaymanagement::operation::delete_connection::DeleteConnectionError::GoneException(_))
    )
}

/// An SDK error as a port error, with the operation and the full cause chain.
pub fn port_error<E, R>(operation: &str, err: SdkError<E, R>) -> PortError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    PortError::new(format!(
        "{operation}: {}",
        aws_sdk_dynamodb::error::DisplayErrorContext(err)
    ))
}
