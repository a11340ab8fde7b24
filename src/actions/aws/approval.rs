//! Identity for approvals, proven by STS: the caller's own identity (`sts:GetCallerIdentity`
//! with its request id), a presigned `GetCallerIdentity` an approver signs with the binding's
//! hash in a signed header, and its verification by the driver, who sends exactly that request
//! to the STS endpoint it would use itself (never to one the approval names) and reads who
//! signed it from STS's answer. STS refuses a signature that is not the signer's, or older
//! than its `X-Amz-Expires`.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_sts::operation::RequestId;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;

use super::explain;
use crate::approval::{Identity, HEADER};

/// The STS endpoint this configuration calls: the runbook's endpoint override, else the
/// region's.
fn endpoint(config: &SdkConfig) -> Result<url::Url, String> {
    let text = match config.endpoint_url() {
        Some(url) => url.to_string(),
        None => {
            let region = config
                .region()
                .ok_or("no AWS region: set [aws] region in the runbook")?;
            format!("https://sts.{region}.amazonaws.com")
        }
    };
    url::Url::parse(&text).map_err(|e| format!("the STS endpoint {text:?}: {e}"))
}

/// The STS endpoint this configuration calls, as text (journaled with each verdict verified).
pub fn endpoint_text(config: &SdkConfig) -> String {
    endpoint(config).map_or_else(|e| e, |u| u.to_string())
}

/// Who the credentials in use are, as STS says, with its request id.
pub async fn caller(config: &SdkConfig) -> Result<Identity, String> {
    let out = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| explain("sts:GetCallerIdentity", &e))?;
    Ok(Identity {
        arn: out.arn().unwrap_or_default().to_string(),
        user_id: out.user_id().unwrap_or_default().to_string(),
        account: out.account().unwrap_or_default().to_string(),
        request_id: out.request_id().unwrap_or_default().to_string(),
    })
}

/// A `GetCallerIdentity` URL presigned with these credentials for `expires`, its signed
/// headers including [`HEADER`] = `binding_hash`.
pub async fn presign(
    config: &SdkConfig,
    binding_hash: &str,
    expires: Duration,
) -> Result<String, String> {
    presign_at(config, binding_hash, expires, SystemTime::now()).await
}

async fn presign_at(
    config: &SdkConfig,
    binding_hash: &str,
    expires: Duration,
    time: SystemTime,
) -> Result<String, String> {
    let provider = config
        .credentials_provider()
        .ok_or("no AWS credentials to sign the approval with")?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| format!("the AWS credentials: {e}"))?;
    let identity = credentials.into();
    let region = config
        .region()
        .map(|r| r.to_string())
        .ok_or("no AWS region: set [aws] region in the runbook")?;
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    // STS takes a presigned request for at most 12 hours.
    settings.expires_in =
        Some(expires.clamp(Duration::from_secs(1), Duration::from_secs(12 * 3600)));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("sts")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| format!("signing the approval: {e}"))?
        .into();
    let mut url = endpoint(config)?;
    url.set_path("/");
    url.set_query(Some("Action=GetCallerIdentity&Version=2011-06-15"));
    let host = host_of(&url);
    let headers = [("host", host.as_str()), (HEADER, binding_hash)];
    let signable = SignableRequest::new(
        "GET",
        url.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| format!("signing the approval: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("signing the approval: {e}"))?
        .into_parts();
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in instructions.params() {
            query.append_pair(name, value);
        }
    }
    Ok(url.to_string())
}

fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => String::new(),
    }
}

/// Sends an approver's presigned request to this configuration's STS endpoint with the
/// binding's hash, and returns who STS says signed it. Refused before sending: a request for
/// another host, another action, or one that does not sign [`HEADER`].
pub async fn verify(
    config: &SdkConfig,
    proof: &str,
    binding_hash: &str,
) -> Result<Identity, String> {
    let url = url::Url::parse(proof).map_err(|e| format!("not a URL ({e})"))?;
    let ours = endpoint(config)?;
    if host_of(&url) != host_of(&ours) || url.scheme() != ours.scheme() {
        return Err(format!(
            "it is signed for {}, not this runbook's STS endpoint {}",
            host_of(&url),
            host_of(&ours)
        ));
    }
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    for key in [
        "Action",
        "X-Amz-SignedHeaders",
        "X-Amz-Credential",
        "X-Amz-Signature",
    ] {
        if query.iter().filter(|(k, _)| k == key).count() != 1 {
            return Err(format!("it has not exactly one {key}"));
        }
    }
    if get("Action") != Some("GetCallerIdentity") {
        return Err("it is not a GetCallerIdentity request".into());
    }
    if !get("X-Amz-SignedHeaders").is_some_and(|h| h.split(';').any(|h| h == HEADER)) {
        return Err(format!("its signature does not cover {HEADER}"));
    }
    // Never followed elsewhere; and an error never shows the URL (it holds the signature and,
    // for temporary credentials, the session's token).
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.without_url().to_string())?
        .get(url)
        .header(HEADER, binding_hash)
        .send()
        .await
        .map_err(|e| format!("STS did not answer: {}", e.without_url()))?;
    let status = answer.status();
    let body = answer
        .text()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&close)? + start;
        Some(body[start..end].trim().to_string())
    };
    if !status.is_success() {
        return Err(format!(
            "STS refused it ({status}): {} {}",
            tag("Code").unwrap_or_default(),
            tag("Message").unwrap_or_default()
        ));
    }
    match (tag("Arn"), tag("UserId"), tag("Account")) {
        (Some(arn), Some(user_id), Some(account)) => Ok(Identity {
            arn,
            user_id,
            account,
            request_id: tag("RequestId").unwrap_or_default(),
        }),
        _ => Err("STS's answer names no identity".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SdkConfig {
        SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new(
                        "AKIDEXAMPLE",
                        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                        None,
                        None,
                        "test",
                    ),
                ),
            )
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build()
    }

    fn query(url: &str, key: &str) -> String {
        url::Url::parse(url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }

    /// STS checks the signature; what is checked here is that the binding is inside what is
    /// signed: the same binding signs the same, another binding signs differently.
    #[tokio::test]
    async fn the_binding_is_inside_the_signature() {
        let c = config();
        let at = at_second(1_796_000_000);
        let one = presign_at(&c, "binding-one", Duration::from_secs(3600), at)
            .await
            .unwrap();
        let again = presign_at(&c, "binding-one", Duration::from_secs(3600), at)
            .await
            .unwrap();
        let other = presign_at(&c, "binding-two", Duration::from_secs(3600), at)
            .await
            .unwrap();
        assert!(
            one.starts_with(
                "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"
            ),
            "{one}"
        );
        assert_eq!(query(&one, "X-Amz-SignedHeaders"), format!("host;{HEADER}"));
        assert_eq!(query(&one, "X-Amz-Expires"), "3600");
        assert!(query(&one, "X-Amz-Credential").starts_with("AKIDEXAMPLE/"));
        assert_eq!(
            query(&one, "X-Amz-Signature"),
            query(&again, "X-Amz-Signature")
        );
        assert_ne!(
            query(&one, "X-Amz-Signature"),
            query(&other, "X-Amz-Signature")
        );
    }

    /// Refused before anything is sent: another host, another action, a signature that does
    /// not cover the binding, a key given twice.
    #[tokio::test]
    async fn a_proof_for_another_host_or_action_is_refused_unsent() {
        let c = config();
        let good = presign_at(&c, "b", Duration::from_secs(60), at_second(1_796_000_000))
            .await
            .unwrap();
        let elsewhere = good.replace("sts.eu-west-1.amazonaws.com", "sts.example.org");
        assert!(verify(&c, &elsewhere, "b")
            .await
            .unwrap_err()
            .contains("signed for sts.example.org"));
        let action = good.replace("Action=GetCallerIdentity", "Action=AssumeRole");
        assert!(verify(&c, &action, "b")
            .await
            .unwrap_err()
            .contains("not a GetCallerIdentity"));
        let unbound = good.replace("host%3Bx-cutover-approval", "host");
        assert!(verify(&c, &unbound, "b")
            .await
            .unwrap_err()
            .contains("does not cover x-cutover-approval"));
        let twice = format!("{good}&Action=GetCallerIdentity");
        assert!(verify(&c, &twice, "b")
            .await
            .unwrap_err()
            .contains("not exactly one Action"));
    }

    fn at_second(secs: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(secs)
    }
}
