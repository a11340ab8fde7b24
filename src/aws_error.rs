//! A failed AWS call in words an operator can act on: what failed, and what to do. A leaf: the
//! actions and the S3 state backend both explain their calls with it.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// A failed AWS call as an operator should read it: what failed and what to do.
pub fn explain<E, R>(operation: &str, error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let context = DisplayErrorContext(error).to_string();
    let lower = context.to_lowercase();
    // A service error says what is wrong in its message; the whole context repeats the raw
    // response (headers, body) and buries it.
    let detail = match error {
        SdkError::ServiceError(service) => service
            .err()
            .message()
            .map_or_else(|| shortened(&context), str::to_string),
        _ => shortened(&context),
    };
    let hint = match error {
        SdkError::ServiceError(service) => match service.err().code().unwrap_or_default() {
            "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "UnauthorizedException" => {
                format!("access denied: these credentials may not call {operation}; the role needs that permission")
            }
            "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" => {
                "the credentials have expired: log in again (e.g. `aws sso login`) and re-run the step".to_string()
            }
            "Throttling" | "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
                format!("AWS throttled {operation} even after retries: wait a minute and re-run the step")
            }
            "UnrecognizedClientException" | "InvalidClientTokenId" | "SignatureDoesNotMatch" | "InvalidAccessKeyId" => {
                "the credentials were rejected: check AWS_PROFILE / the access keys".to_string()
            }
            code => format!("{operation} failed ({})", if code.is_empty() { "no error code" } else { code }),
        },
        _ if lower.contains("credential") => {
            "no usable AWS credentials: set AWS_PROFILE (and `aws sso login`) or export access keys, then re-run".to_string()
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            format!("cannot reach the AWS endpoint for {operation} (network, proxy or --endpoint-url?)")
        }
        SdkError::ResponseError(_) => format!(
            "{operation}: the endpoint's answer is not an AWS response (a proxy, or a failing local endpoint?)"
        ),
        _ => format!("{operation} failed"),
    };
    format!("{hint}: {detail}")
}

/// The first 300 characters of an error's whole context.
fn shortened(context: &str) -> String {
    match context.char_indices().nth(300) {
        Some((end, _)) => format!("{}…", &context[..end]),
        None => context.to_string(),
    }
}
