//! Moto's server, the AWS APIs on loopback that scripts/test starts
//! (`CUTOVER_TEST_AWS_ENDPOINT`): where it is, an SDK config for it, a runtime to call it on.

use std::future::Future;

/// The account moto answers for.
pub const ACCOUNT: &str = "123456789012";

/// Moto's endpoint (`http://127.0.0.1:PORT`).
#[track_caller]
pub fn endpoint() -> String {
    super::var("CUTOVER_TEST_AWS_ENDPOINT")
}

/// A current-thread runtime for the SDK's calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An SDK config for moto: us-east-1, its endpoint, dummy credentials.
pub async fn sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

/// A test's way into moto: its endpoint, an SDK config for it, and the runtime the SDK's
/// clients made from that config are called on (one runtime: a client's connections belong
/// to the runtime that opened them).
pub struct Moto {
    pub endpoint: String,
    pub config: aws_config::SdkConfig,
    runtime: tokio::runtime::Runtime,
}

impl Moto {
    #[track_caller]
    pub fn new() -> Moto {
        let endpoint = endpoint();
        let runtime = runtime();
        let config = runtime.block_on(sdk());
        Moto {
            endpoint,
            config,
            runtime,
        }
    }

    /// Runs `future` (SDK calls) to its end.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}
