//! `cutover approve STEP --digest D`: a second operator approves what a run of a step asked
//! for, from their own terminal and their own AWS credentials. What they approve is shown
//! first (the step, who asked, what it will do, the digest); `--digest` says they read it.
//! Their approval is a presigned `sts:GetCallerIdentity` whose signed header carries the
//! binding (step, digest, the journal's decision head, expiry): the driver sends it to STS,
//! which says who signed it. Posted beside the journal (the state directory, or S3).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cutover::approval::{self, Binding, Identity, Posted, Verdict};
use cutover::runbook::{Runbook, Step};
use cutover::state::s3::Reading;

use super::context::{self, load_journal, Context};
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The step whose run asked for approval.
    pub step: String,
    /// The digest of what will run, as the request shows it: what you approve, exactly.
    #[arg(long)]
    pub digest: Option<String>,
    /// Why, for the record.
    #[arg(long, default_value = "")]
    pub note: String,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let state = ctx.state(Some(Reading::New))?;
    let runbook = ctx.load()?;
    let step = step_needing_approval(&runbook, &args.step)?;
    let loaded = load_journal(&state.workspace)?;
    let journal = &loaded.state;
    let request = journal
        .step(&step.id)
        .and_then(|r| r.approval_request.clone())
        .ok_or_else(|| {
            Failure::new(
                exit::REFUSED,
                format!(
                    "nobody has asked for `{}` to be approved: a run of the step asks first (`cutover run {}`), and says what it will run",
                    step.id, step.id
                ),
            )
        })?;
    if request.step_digest != step.digest {
        return Err(Failure::new(
            exit::REFUSED,
            format!(
                "the step asked for is not `{}` as your runbook defines it (definition {} in the request, {} here): use the same runbook and variables as the driver",
                step.id, request.step_digest, step.digest
            ),
        ));
    }
    if journal.decision_head != request.head {
        return Err(Failure::new(
            exit::REFUSED,
            format!(
                "the journal moved on since {} asked at {} (a step ran, was marked or rolled back): an approval of that request would be void; ask for a new one (run the step again)",
                request.actor, request.time
            ),
        ));
    }
    println!(
        "Step `{}`: {}\nAsked by {} ({}) at {}\nIt will: {}\nDigest: {}\nIt needs {} approval(s) from other operators.",
        step.id,
        step.title,
        request.by_arn,
        request.actor,
        request.time,
        request.what,
        request.digest,
        request.required
    );
    match args.digest.as_deref().map(str::trim) {
        None => {
            return Err(Failure::new(
                exit::REFUSED,
                format!(
                    "to approve exactly this: cutover approve {} --digest {}",
                    step.id, request.digest
                ),
            ))
        }
        Some(d) if d != request.digest => {
            return Err(Failure::new(
                exit::REFUSED,
                format!(
                    "--digest {d} is not what was asked for ({}): what will run is not what you read; read it again",
                    request.digest
                ),
            ))
        }
        Some(_) => {}
    }
    let requester = Identity {
        arn: request.by_arn.clone(),
        user_id: request.by_user_id.clone(),
        account: String::new(),
        request_id: String::new(),
    };
    post(
        &runbook,
        &state,
        step,
        Verdict::Approve,
        &request.digest,
        &request.head,
        &args.note,
        Some(&requester.principal()),
        journal,
    )
}

/// The step, when it needs approvals.
pub(super) fn step_needing_approval<'a>(
    runbook: &'a Runbook,
    id: &str,
) -> Result<&'a Step, Failure> {
    let step = runbook
        .step(id)
        .ok_or_else(|| Failure::new(exit::INVALID, format!("no step `{id}` in the runbook")))?;
    if runbook.approval_policy(step).is_none() {
        return Err(Failure::new(
            exit::INVALID,
            format!("step `{id}` needs no approval (no `approvals` for it in the runbook)"),
        ));
    }
    Ok(step)
}

/// Signs a verdict with this operator's AWS credentials and posts it.
#[allow(clippy::too_many_arguments)]
pub(super) fn post(
    runbook: &Runbook,
    state: &cutover::state::State,
    step: &Step,
    verdict: Verdict,
    digest: &str,
    head: &str,
    note: &str,
    not_principal: Option<&str>,
    journal: &cutover::journal::JournalState,
) -> Result<u8, Failure> {
    let policy = runbook
        .approval_policy(step)
        .ok_or_else(|| Failure::new(exit::INVALID, "no approval policy"))?;
    let settings = runbook.aws.clone().unwrap_or_default();
    let runtime = context::runtime()?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let (identity, posted) = runtime.block_on(async {
        let session = cutover::actions::aws::Session::default();
        let (config, _) = session
            .guard(&settings)
            .await
            .map_err(|e| Failure::new(exit::REFUSED, e))?;
        let identity = cutover::actions::aws::approval::caller(config)
            .await
            .map_err(|e| Failure::new(exit::REFUSED, e))?;
        if not_principal == Some(identity.principal().as_str()) {
            return Err(Failure::new(
                exit::REFUSED,
                format!(
                    "you asked for it ({} is the requester's identity): an approval must come from another operator, with their own AWS credentials",
                    identity.arn
                ),
            ));
        }
        // A withdraw names the denies it takes back: this principal's, as the journal recorded
        // them or as the approvals hold them (each verified with STS, as the driver would).
        let mut withdraws = Vec::new();
        if verdict == Verdict::Withdraw {
            let mine = identity.principal();
            for n in journal
                .step(&step.id)
                .map(|r| r.approvals.as_slice())
                .unwrap_or_default()
            {
                let who = Identity {
                    arn: n.by_arn.clone(),
                    user_id: n.by_user_id.clone(),
                    account: identity.account.clone(),
                    request_id: String::new(),
                };
                if n.verdict == "deny" && !n.by_user_id.is_empty() && who.principal() == mine {
                    withdraws.push(n.nonce.clone());
                }
            }
            let files = cutover::state::approvals::mailbox(state)
                .read(&step.id)
                .map_err(|e| Failure::new(exit::STATE_UNAVAILABLE, e))?;
            for (_, bytes) in files {
                let Ok(p) = serde_json::from_slice::<Posted>(&bytes) else {
                    continue;
                };
                if p.binding.verdict != Verdict::Deny || withdraws.contains(&p.binding.nonce) {
                    continue;
                }
                let by = cutover::actions::aws::approval::verify(
                    config,
                    &p.proof,
                    &p.binding.hash(),
                )
                .await;
                if by.is_ok_and(|by| by.principal() == mine) {
                    withdraws.push(p.binding.nonce);
                }
            }
            if withdraws.is_empty() {
                return Err(Failure::new(
                    exit::REFUSED,
                    format!(
                        "{} has no deny of `{}` to withdraw",
                        identity.arn, step.id
                    ),
                ));
            }
        }
        let binding = Binding {
            withdraws,
            step: step.id.clone(),
            verdict,
            digest: digest.to_string(),
            head: head.to_string(),
            signed_at_ms: now_ms,
            expires_at_ms: now_ms + u64::try_from(policy.ttl.as_millis()).unwrap_or(u64::MAX / 2),
            note: note.to_string(),
            actor: cutover::actor::current(),
            nonce: nonce(),
        };
        let proof = cutover::actions::aws::approval::presign(
            config,
            &binding.hash(),
            policy.ttl,
        )
        .await
        .map_err(|e| Failure::new(exit::REFUSED, e))?;
        Ok((identity, Posted { binding, proof }))
    })?;
    let bytes = serde_json::to_vec_pretty(&posted)
        .map_err(|e| Failure::new(exit::INVALID, e.to_string()))?;
    let place = cutover::state::approvals::mailbox(state)
        .post(&step.id, &approval::file_name(&posted.binding), &bytes)
        .map_err(|e| Failure::new(exit::STATE_UNAVAILABLE, e))?;
    let what = match verdict {
        Verdict::Approve => format!(
            "approved `{}` for digest {digest}, until {}",
            step.id,
            humantime::format_rfc3339_seconds(
                UNIX_EPOCH + Duration::from_millis(posted.binding.expires_at_ms)
            )
        ),
        Verdict::Deny => format!(
            "denied `{}`: it cannot run until you withdraw this (`cutover deny {} --withdraw`)",
            step.id, step.id
        ),
        Verdict::Withdraw => format!("withdrew your deny of `{}`", step.id),
    };
    println!(
        "{what}, as {} ({}; STS request {}). Posted to {place}: the driver's next run of the step reads it.",
        identity.arn, identity.user_id, identity.request_id
    );
    Ok(exit::OK)
}

/// 128 random bits, in hex: no two verdicts share a name or a binding.
fn nonce() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Unique still (time and process), if not unpredictable.
        let seed = format!(
            "{:?}{}",
            SystemTime::now().duration_since(UNIX_EPOCH),
            std::process::id()
        );
        use sha2::Digest;
        bytes.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes())[..16]);
    }
    hex::encode(bytes)
}
