//! Who is acting: `user@host`, recorded on every journal line and in the lock.

/// The environment variable that overrides the detected actor (tests, shared accounts).
pub const ACTOR_ENV: &str = "CUTOVER_ACTOR";

/// The name of this machine, or `unknown-host`.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// The login name of the current user, or the numeric uid when it has none.
pub fn username() -> String {
    let uid = nix::unistd::Uid::current();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => std::env::var("USER").unwrap_or_else(|_| format!("uid{uid}")),
    }
}

/// `user@host`, or the value of `CUTOVER_ACTOR` when set.
pub fn current() -> String {
    match std::env::var(ACTOR_ENV) {
        Ok(actor) if !actor.trim().is_empty() => actor.trim().to_string(),
        _ => format!("{}@{}", username(), hostname()),
    }
}
