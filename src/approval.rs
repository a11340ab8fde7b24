//! A second operator's approval of a step: what an approval binds to, whose it is, and whether
//! the approvals in hand let the step run. Pure: identities come in already verified by STS
//! (actions::aws::approval replays each approver's presigned `sts:GetCallerIdentity`), the
//! tally goes out.
//!
//! An approval names the step, the digest of exactly what will run (the action's parameters
//! with variables, outputs and secrets filled in: a new Terraform plan is a new `plan_sha256`,
//! an edited variable a new digest), the journal's decision head when it was given (the last
//! line that was not approval bookkeeping), and when it expires. The approver's tool hashes
//! that binding into a header of a presigned `sts:GetCallerIdentity` it signs with its own
//! credentials: the driver sends that request to STS, which answers with the signer's
//! identity only if the signature, hence the binding, is the approver's own.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The signed header that carries the binding's hash in the presigned request.
pub const HEADER: &str = "x-cutover-approval";

/// How long an approval holds unless the runbook says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    /// Blocks the step until the same principal withdraws it.
    Deny,
    Withdraw,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
            Verdict::Withdraw => "withdraw",
        }
    }
}

/// What an approver signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub step: String,
    pub verdict: Verdict,
    /// The digest of what will run ([`content_digest`]), as the request showed it.
    pub digest: String,
    /// The journal's decision head the approver saw.
    pub head: String,
    /// Unix milliseconds, by the approver's clock (STS checks the signature's own time):
    /// a principal's later verdict is the one that stands.
    pub signed_at_ms: u64,
    pub expires_at_ms: u64,
    pub note: String,
    /// The approver's `user@host`, for people; the identity is STS's answer.
    pub actor: String,
    /// Random: two approvals are never the same binding.
    pub nonce: String,
    /// A withdraw names the denies it takes back (their nonces), its principal's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdraws: Vec<String>,
}

impl Binding {
    /// The hash that goes into the signed header: sha256 of the binding's JSON.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(
            serde_json::to_vec(self).unwrap_or_default().as_slice(),
        ))
    }
}

/// An approval as posted for the driver: the binding and the presigned request that proves
/// who signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posted {
    pub binding: Binding,
    /// A presigned `sts:GetCallerIdentity` URL whose signed headers include [`HEADER`].
    pub proof: String,
}

/// Who STS says signed a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub arn: String,
    pub user_id: String,
    pub account: String,
    /// STS's request id for the call that said so.
    pub request_id: String,
}

impl Identity {
    /// The principal an approval counts for. Two approvals count as two only when their
    /// principals differ:
    /// - an IAM user: its `UserId` (AIDA…), the same whatever key it signs with;
    /// - an assumed role: the role's id (AROA…) alone, since the session name after the colon
    ///   is chosen by whoever assumes it, and proves nothing;
    /// - except IAM Identity Center (SSO) roles (`AWSReservedSSO_…`): there AWS sets the
    ///   session name to the signed-in user's name, and that name is the person, whichever
    ///   permission set they signed in with (`sso:NAME`);
    /// - the account's root: the account.
    ///
    /// A person who is an IAM user and can also assume a role is two principals: `approvers`
    /// patterns say whose approvals count.
    pub fn principal(&self) -> String {
        if self.is_root() {
            return format!("root:{}", self.account);
        }
        let role = self.arn.split(":assumed-role/").nth(1);
        match (self.user_id.split_once(':'), role) {
            (Some((_, session)), Some(r)) if r.starts_with("AWSReservedSSO_") => {
                format!("sso:{session}")
            }
            (Some((role_id, _)), Some(_)) => role_id.to_string(),
            _ => self.user_id.clone(),
        }
    }

    pub fn is_root(&self) -> bool {
        self.arn.ends_with(":root")
    }

    /// A federated user (`sts:GetFederationToken`): its name is its caller's choice.
    pub fn is_federated(&self) -> bool {
        self.arn.contains(":federated-user/")
    }
}

/// The digest of exactly what will run: the step, its definition's digest and its action's
/// parameters as the action will get them (each string is hashed into it, secrets too; none
/// is kept). 16 bytes of sha256, in hex.
pub fn content_digest(
    step: &str,
    definition: &str,
    kind: &str,
    params: &serde_json::Value,
) -> String {
    let text = serde_json::json!({
        "step": step,
        "definition": definition,
        "do": kind,
        "params": params,
    });
    hex::encode(&Sha256::digest(text.to_string().as_bytes())[..16])
}

/// Where approvers post their verdicts and the driver reads them (the state's mailbox: the
/// state directory, or the S3 prefix).
pub trait Mailbox: Send + Sync {
    /// Writes one verdict, never over another; says where it went.
    fn post(&self, step: &str, name: &str, bytes: &[u8]) -> Result<String, String>;
    /// Every verdict posted on the step: (file name, bytes).
    fn read(&self, step: &str) -> Result<Vec<(String, Vec<u8>)>, String>;
}

/// The file name of a posted verdict: its time and nonce.
pub fn file_name(binding: &Binding) -> String {
    format!("{:015}-{}.json", binding.signed_at_ms, binding.nonce)
}

/// What a step needs before it may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Approvals from distinct principals, none the requester's.
    pub count: u32,
    /// ARN patterns (`*` any run of characters); empty: anyone in the account.
    pub approvers: Vec<String>,
    pub ttl: Duration,
}

/// Whether `arn` matches a pattern where `*` stands for any run of characters within one of
/// the ARN's `:`-separated fields (`arn:aws:iam::*:user/ops-*` is any account's `ops-` users;
/// a `*` never reaches into the next field).
pub fn arn_matches(pattern: &str, arn: &str) -> bool {
    let patterns: Vec<&str> = pattern.split(':').collect();
    let fields: Vec<&str> = arn.split(':').collect();
    patterns.len() == fields.len()
        && patterns
            .iter()
            .zip(&fields)
            .all(|(p, f)| field_matches(p, f))
}

fn field_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// How one posted verdict stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "standing", content = "why", rename_all = "snake_case")]
pub enum Standing {
    /// An approval that counts.
    Counted,
    /// A deny in force: the step is blocked.
    Denies,
    /// A withdraw that took back its principal's deny.
    Withdrawn,
    /// A deny that cannot be verified: it blocks until its file is gone.
    Blocks(String),
    /// Does not count, and why.
    Void(String),
}

impl Standing {
    pub fn text(&self) -> String {
        match self {
            Standing::Counted => "counted".into(),
            Standing::Denies => "denies".into(),
            Standing::Withdrawn => "withdrawn".into(),
            Standing::Blocks(why) => format!("blocks: {why}"),
            Standing::Void(why) => format!("void: {why}"),
        }
    }
}

/// One posted verdict, read and judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Considered {
    pub binding: Binding,
    /// STS's answer, or why the proof did not verify.
    pub identity: Result<Identity, String>,
    pub standing: Standing,
}

impl Considered {
    /// "arn:aws:iam::123456789012:user/bea (AIDA…)", or who the file claims to be.
    pub fn who(&self) -> String {
        match &self.identity {
            Ok(i) => format!("{} ({})", i.arn, i.user_id),
            Err(_) => format!("{} (unverified)", self.binding.actor),
        }
    }
}

/// Where a step's approvals stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub required: u32,
    pub considered: Vec<Considered>,
    /// Denies the journal recorded in force whose files are gone or whose proofs no longer
    /// verify, and no withdraw took back: they still hold.
    pub kept_denies: Vec<String>,
}

impl Tally {
    pub fn counted(&self) -> impl Iterator<Item = &Considered> {
        self.considered
            .iter()
            .filter(|c| c.standing == Standing::Counted)
    }

    pub fn denials(&self) -> impl Iterator<Item = &Considered> {
        self.considered
            .iter()
            .filter(|c| matches!(c.standing, Standing::Denies | Standing::Blocks(_)))
    }

    pub fn missing(&self) -> u32 {
        self.required
            .saturating_sub(u32::try_from(self.counted().count()).unwrap_or(u32::MAX))
    }

    /// The step may run: enough approvals and no deny in force.
    pub fn allows(&self) -> bool {
        self.missing() == 0 && self.denials().next().is_none() && self.kept_denies.is_empty()
    }

    /// What stands, for the operator: who approved, who denies, what does not count, what is
    /// missing.
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        for c in &self.considered {
            lines.push(format!(
                "- {} {}: {}{}",
                c.who(),
                match c.binding.verdict {
                    Verdict::Approve => "approved",
                    Verdict::Deny => "denied",
                    Verdict::Withdraw => "withdrew a deny",
                },
                c.standing.text(),
                if c.binding.note.is_empty() {
                    String::new()
                } else {
                    format!(" — “{}”", c.binding.note)
                }
            ));
        }
        let mut head = format!(
            "{} of {} approval(s) in",
            self.required - self.missing(),
            self.required
        );
        if self.denials().next().is_some() || !self.kept_denies.is_empty() {
            head.push_str("; a deny is in force until withdrawn (`cutover deny STEP --withdraw`, by whoever denied)");
        }
        for kept in &self.kept_denies {
            lines.push(format!("- {kept}"));
        }
        if lines.is_empty() {
            head
        } else {
            format!("{head}:\n{}", lines.join("\n"))
        }
    }
}

/// A deny the journal recorded in force: its nonce, who gave it (STS's ARN and UserId).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedDeny {
    pub nonce: String,
    pub arn: String,
    pub user_id: String,
}

/// What a tally judges against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub step: &'a str,
    /// The requester's principal.
    pub requester: &'a str,
    /// The account approvals must be signed in (the runbook's).
    pub account: &'a str,
    pub digest: &'a str,
    /// The journal's decision head.
    pub head: &'a str,
    pub now_ms: u64,
}

/// Judges the verdicts posted on a step for a request:
/// - an approval counts when it is verified, in the runbook's account, not the requester's,
///   by an approver `policy` allows (never a federated user; root only when `approvers`
///   names it), for this digest and decision head, and not expired; of one principal's
///   approvals the latest (by their own clock) stands;
/// - a deny holds until a verified withdraw of the same principal names it; one the journal
///   recorded holds even when its file is gone or its proof expired (`recorded`); a deny whose
///   proof does not verify blocks until its file is removed;
/// - anything else is void, and says why.
pub fn tally(
    policy: &Policy,
    posted: Vec<(Binding, Result<Identity, String>)>,
    recorded: &[RecordedDeny],
    r: &Request<'_>,
) -> Tally {
    let mut posted: Vec<_> = posted
        .into_iter()
        .filter(|(b, _)| b.step == r.step)
        .collect();
    posted.sort_by_key(|(b, _)| b.signed_at_ms);
    // Denies taken back: (principal, nonce) of each verified withdraw.
    let withdrawn: Vec<(String, String)> = posted
        .iter()
        .filter(|(b, _)| b.verdict == Verdict::Withdraw)
        .filter_map(|(b, id)| id.as_ref().ok().map(|id| (id.principal(), b)))
        .flat_map(|(p, b)| b.withdraws.iter().map(move |n| (p.clone(), n.clone())))
        .collect();
    let taken_back =
        |principal: &str, nonce: &str| withdrawn.iter().any(|(p, n)| p == principal && n == nonce);
    // The latest approval of each verified principal.
    let mut latest: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (b, identity)) in posted.iter().enumerate() {
        if let (Verdict::Approve, Ok(identity)) = (b.verdict, identity) {
            latest.insert(identity.principal(), i);
        }
    }
    let named = |id: &Identity| policy.approvers.iter().any(|p| arn_matches(p, &id.arn));
    let considered: Vec<Considered> = posted
        .into_iter()
        .enumerate()
        .map(|(i, (binding, identity))| {
            let standing = match (&identity, binding.verdict) {
                (Err(why), Verdict::Deny) => Standing::Blocks(format!(
                    "its proof of identity did not verify with STS ({why}): it holds until its file is removed from the approvals"
                )),
                (Err(why), _) => Standing::Void(format!(
                    "its proof of identity did not verify with STS: {why}"
                )),
                (Ok(id), _) if id.account != r.account => Standing::Void(format!(
                    "signed in account {}, not the runbook's {}",
                    id.account, r.account
                )),
                (Ok(id), _) if id.is_federated() => Standing::Void(
                    "a federated user's name is its caller's choice: it proves no one".into(),
                ),
                (Ok(id), _) if id.is_root() && !named(id) => Standing::Void(
                    "the account's root user counts only when `approvers` names it".into(),
                ),
                (Ok(id), Verdict::Deny) if taken_back(&id.principal(), &binding.nonce) => {
                    Standing::Void("withdrawn by its author".into())
                }
                (Ok(_), Verdict::Deny) => Standing::Denies,
                (Ok(_), Verdict::Withdraw) if binding.withdraws.is_empty() => {
                    Standing::Void("it names no deny to take back".into())
                }
                (Ok(_), Verdict::Withdraw) => Standing::Withdrawn,
                (Ok(id), Verdict::Approve) if latest.get(&id.principal()) != Some(&i) => {
                    Standing::Void("superseded by a later approval of the same principal".into())
                }
                (Ok(id), Verdict::Approve) if id.principal() == r.requester => Standing::Void(
                    "it is the requester's own: an approval must come from someone else".into(),
                ),
                (Ok(id), Verdict::Approve) if !policy.approvers.is_empty() && !named(id) => {
                    Standing::Void(format!(
                        "{} is not among the approvers ({})",
                        id.arn,
                        policy.approvers.join(", ")
                    ))
                }
                (Ok(_), Verdict::Approve) if binding.digest != r.digest => Standing::Void(format!(
                    "what will run changed since it was approved (approved {}, now {}): a variable, an output or the plan is not what the approver saw",
                    binding.digest, r.digest
                )),
                (Ok(_), Verdict::Approve) if binding.head != r.head => Standing::Void(
                    "the journal moved on since it was approved (a step ran, was marked or rolled back)".into(),
                ),
                (Ok(_), Verdict::Approve) if r.now_ms > binding.expires_at_ms => {
                    Standing::Void(format!(
                        "it expired at {}",
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH
                                + Duration::from_millis(binding.expires_at_ms.min(253_402_300_799_000))
                        )
                    ))
                }
                (Ok(_), Verdict::Approve) => Standing::Counted,
            };
            Considered {
                binding,
                identity,
                standing,
            }
        })
        .collect();
    // Denies the journal holds in force that this round did not see in force.
    let kept_denies = recorded
        .iter()
        .filter(|d| {
            !considered
                .iter()
                .any(|c| c.binding.nonce == d.nonce && c.standing == Standing::Denies)
        })
        .filter(|d| {
            let principal = Identity {
                arn: d.arn.clone(),
                user_id: d.user_id.clone(),
                account: r.account.to_string(),
                request_id: String::new(),
            }
            .principal();
            !taken_back(&principal, &d.nonce)
        })
        .map(|d| {
            format!(
                "{} ({}) denied it: recorded in force, and no withdraw of theirs names it (its file is gone or its proof expired): it holds",
                d.arn, d.user_id
            )
        })
        .collect();
    Tally {
        required: policy.count,
        considered,
        kept_denies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, id: &str) -> Identity {
        Identity {
            arn: format!("arn:aws:iam::123456789012:user/{name}"),
            user_id: id.into(),
            account: "123456789012".into(),
            request_id: format!("req-{name}"),
        }
    }

    fn role(session: &str, sso: bool) -> Identity {
        let role = if sso {
            "AWSReservedSSO_Admin_0123abcd"
        } else {
            "deployer"
        };
        Identity {
            arn: format!("arn:aws:sts::123456789012:assumed-role/{role}/{session}"),
            user_id: format!("AROAROLEID:{session}"),
            account: "123456789012".into(),
            request_id: "req".into(),
        }
    }

    fn binding(verdict: Verdict, at: u64) -> Binding {
        Binding {
            step: "apply".into(),
            verdict,
            digest: "d1".into(),
            head: "h1".into(),
            signed_at_ms: at * 1000,
            expires_at_ms: (at + 3600) * 1000,
            note: String::new(),
            actor: "bea@laptop".into(),
            nonce: format!("n{at}"),
            withdraws: Vec::new(),
        }
    }

    fn withdraw(at: u64, nonce: &str) -> Binding {
        Binding {
            withdraws: vec![nonce.into()],
            ..binding(Verdict::Withdraw, at)
        }
    }

    const POLICY: Policy = Policy {
        count: 1,
        approvers: Vec::new(),
        ttl: DEFAULT_TTL,
    };

    fn request(digest: &'static str, head: &'static str, now_s: u64) -> Request<'static> {
        Request {
            step: "apply",
            requester: "AIDAANA",
            account: "123456789012",
            digest,
            head,
            now_ms: now_s * 1000,
        }
    }

    fn judge(posted: Vec<(Binding, Result<Identity, String>)>) -> Tally {
        tally(&POLICY, posted, &[], &request("d1", "h1", 20))
    }

    #[test]
    fn principals_tell_people_apart_not_session_names() {
        assert_eq!(user("bea", "AIDABEA").principal(), "AIDABEA");
        assert_eq!(
            role("ana", false).principal(),
            role("bea", false).principal()
        );
        assert_eq!(role("bea", true).principal(), "sso:bea");
        // One person in two permission sets is one principal.
        let other_set = Identity {
            arn: "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_ReadOnly_99/bea".into(),
            user_id: "AROAOTHER:bea".into(),
            ..role("bea", true)
        };
        assert_eq!(other_set.principal(), "sso:bea");
        let root = Identity {
            arn: "arn:aws:iam::123456789012:root".into(),
            user_id: "123456789012".into(),
            account: "123456789012".into(),
            request_id: String::new(),
        };
        assert_eq!(root.principal(), "root:123456789012");
    }

    #[test]
    fn the_requester_never_counts_and_a_second_principal_does() {
        let t = judge(vec![(
            binding(Verdict::Approve, 10),
            Ok(user("ana", "AIDAANA")),
        )]);
        assert!(!t.allows());
        assert!(t.describe().contains("requester's own"), "{}", t.describe());
        let t = judge(vec![(
            binding(Verdict::Approve, 10),
            Ok(user("bea", "AIDABEA")),
        )]);
        assert!(t.allows(), "{}", t.describe());
    }

    #[test]
    fn another_account_a_federated_user_or_root_do_not_count() {
        let elsewhere = Identity {
            account: "999999999999".into(),
            arn: "arn:aws:iam::999999999999:user/bea".into(),
            ..user("bea", "AIDAELSE")
        };
        let text = judge(vec![(binding(Verdict::Approve, 10), Ok(elsewhere))]).describe();
        assert!(
            text.contains("signed in account 999999999999, not the runbook's 123456789012"),
            "{text}"
        );
        let federated = Identity {
            arn: "arn:aws:sts::123456789012:federated-user/anyone".into(),
            user_id: "123456789012:anyone".into(),
            ..user("x", "x")
        };
        let text = judge(vec![(binding(Verdict::Approve, 10), Ok(federated))]).describe();
        assert!(text.contains("federated user"), "{text}");
        let root = Identity {
            arn: "arn:aws:iam::123456789012:root".into(),
            user_id: "123456789012".into(),
            ..user("x", "x")
        };
        let text = judge(vec![(binding(Verdict::Approve, 10), Ok(root.clone()))]).describe();
        assert!(text.contains("root user counts only when"), "{text}");
        let named = Policy {
            approvers: vec!["arn:aws:iam::123456789012:root".into()],
            ..POLICY
        };
        let t = tally(
            &named,
            vec![(binding(Verdict::Approve, 10), Ok(root))],
            &[],
            &request("d1", "h1", 20),
        );
        assert!(t.allows(), "{}", t.describe());
    }

    #[test]
    fn two_sessions_of_one_role_count_once() {
        let two = Policy { count: 2, ..POLICY };
        let t = tally(
            &two,
            vec![
                (binding(Verdict::Approve, 10), Ok(role("bea", false))),
                (binding(Verdict::Approve, 11), Ok(role("cal", false))),
            ],
            &[],
            &request("d1", "h1", 20),
        );
        assert_eq!(t.missing(), 1, "{}", t.describe());
        assert!(t.describe().contains("superseded"), "{}", t.describe());
    }

    #[test]
    fn a_changed_digest_a_moved_journal_or_the_clock_void_an_approval() {
        let at = |digest: &'static str, head: &'static str, now: u64| {
            tally(
                &POLICY,
                vec![(binding(Verdict::Approve, 10), Ok(user("bea", "AIDABEA")))],
                &[],
                &request(digest, head, now),
            )
        };
        assert!(at("d2", "h1", 20)
            .describe()
            .contains("what will run changed since it was approved (approved d1, now d2)"));
        assert!(at("d1", "h2", 20)
            .describe()
            .contains("the journal moved on"));
        assert!(at("d1", "h1", 3611)
            .describe()
            .contains("expired at 1970-01-01T01:00:10Z"));
        assert!(at("d1", "h1", 3610).allows());
    }

    #[test]
    fn a_deny_holds_until_its_author_withdraws_it_by_name() {
        let with = |extra: Vec<(Binding, Result<Identity, String>)>| {
            let mut posted = vec![
                (binding(Verdict::Approve, 10), Ok(user("cal", "AIDACAL"))),
                (binding(Verdict::Deny, 11), Ok(user("bea", "AIDABEA"))),
            ];
            posted.extend(extra);
            judge(posted)
        };
        assert!(!with(Vec::new()).allows());
        // Someone else's withdraw, or bea's approval, does not lift bea's deny.
        assert!(!with(vec![(withdraw(12, "n11"), Ok(user("dan", "AIDADAN")))]).allows());
        assert!(!with(vec![(
            binding(Verdict::Approve, 12),
            Ok(user("bea", "AIDABEA"))
        )])
        .allows());
        // Nor a withdraw from a clock set back: it names the deny, order does not matter.
        assert!(with(vec![(withdraw(5, "n11"), Ok(user("bea", "AIDABEA")))]).allows());
        // A withdraw that names no deny takes back nothing.
        assert!(!with(vec![(withdraw(12, "other"), Ok(user("bea", "AIDABEA")))]).allows());
    }

    #[test]
    fn a_recorded_deny_holds_when_its_file_is_gone_or_its_proof_expired() {
        let recorded = [RecordedDeny {
            nonce: "n11".into(),
            arn: "arn:aws:iam::123456789012:user/bea".into(),
            user_id: "AIDABEA".into(),
        }];
        let approve = (binding(Verdict::Approve, 10), Ok(user("cal", "AIDACAL")));
        let t = tally(
            &POLICY,
            vec![approve.clone()],
            &recorded,
            &request("d1", "h1", 20),
        );
        assert!(!t.allows());
        assert!(
            t.describe().contains("recorded in force"),
            "{}",
            t.describe()
        );
        let t = tally(
            &POLICY,
            vec![approve, (withdraw(12, "n11"), Ok(user("bea", "AIDABEA")))],
            &recorded,
            &request("d1", "h1", 20),
        );
        assert!(t.allows(), "{}", t.describe());
    }

    #[test]
    fn approvers_patterns_and_unverified_proofs() {
        let only_ops = Policy {
            approvers: vec!["arn:aws:iam::123456789012:user/ops-*".into()],
            ..POLICY
        };
        let t = tally(
            &only_ops,
            vec![
                (binding(Verdict::Approve, 10), Ok(user("bea", "AIDABEA"))),
                (
                    binding(Verdict::Approve, 11),
                    Err("SignatureDoesNotMatch".into()),
                ),
                (
                    binding(Verdict::Deny, 12),
                    Err("SignatureDoesNotMatch".into()),
                ),
            ],
            &[],
            &request("d1", "h1", 20),
        );
        assert!(!t.allows());
        let text = t.describe();
        assert!(text.contains("is not among the approvers"), "{text}");
        assert!(text.contains("bea@laptop (unverified) approved: void: its proof of identity did not verify with STS: SignatureDoesNotMatch"), "{text}");
        assert!(
            text.contains("denied: blocks: its proof of identity did not verify"),
            "{text}"
        );
        assert!(arn_matches(
            "arn:aws:iam::*:user/ops-*",
            "arn:aws:iam::1:user/ops-bea"
        ));
        assert!(!arn_matches(
            "arn:aws:iam::*:user/ops-*",
            "arn:aws:iam::1:user/bea"
        ));
        // A `*` stays inside its field: it cannot swallow the account.
        assert!(!arn_matches(
            "arn:aws:iam::123456789012*",
            "arn:aws:iam::123456789012:user/bea"
        ));
        assert!(!arn_matches("arn:aws:iam::*", "arn:aws:iam::1:user/bea"));
        assert!(arn_matches(
            "arn:aws:iam::1:user/bea",
            "arn:aws:iam::1:user/bea"
        ));
        assert!(!field_matches("a*b*c", "ac"));
    }
}
