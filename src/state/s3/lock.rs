//! The S3 lock (`lock.json`) and the lease its holder keeps on it.
//!
//! **Staleness is S3's to say.** A lock is stale when S3 has not seen it renewed for its lease:
//! the time since the object was last written is the response's `Date` less the object's
//! `Last-Modified`, both from S3's clock. No machine's clock is set against another's: the
//! holder's `heartbeat` field is for people, never for the decision. (HTTP dates are whole
//! seconds: "more than the lease in whole seconds" is more than the lease.)
//!
//! **The holder fences itself.** Its lease is renewed every quarter of it with `If-Match` on
//! the lock's ETag; a renewal that S3 accepts proves that nobody removed or replaced the lock
//! since the last one (taking it over changes the object). A takeover needs S3 to have seen no
//! renewal for a whole lease, so for three quarters of a lease after a renewal was *sent* —
//! measured on this machine's own clocks, monotonic and wall (the larger: a suspended laptop's
//! monotonic clock stands still) — no other driver can have the lock. Every append checks that
//! window first and renews when half of it is gone ([`Lease::ensure`]); a renewal refused, or
//! none accepted within the lease, loses the lease: [`Lease::lost`] fires, the driver cancels
//! its step, and nothing more is appended.
//!
//! Why the lock and not (only) `head.json` with `If-Match`: S3 conditions one object per
//! request, so no write can be made conditional on the lock and the event at once, and a head
//! written with `If-Match` after the event object would refuse only once the event is already
//! in the journal. The event object's own `If-None-Match: *` makes a fork impossible (a driver
//! that lapsed can write event N only if nobody has), the lease bounds *when* it can try, and
//! the head is still written only over the head this driver last saw (see `store`). What no
//! client-side fence can close: a driver frozen between its check and its write for longer
//! than the lease; then the new driver finds event N taken and stops naming it (exit 3), and the
//! chain stays whole.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Condition, Put, Remote, S3Error};

/// How long a lock may go unrenewed (by S3's clock) before it is stale (and `cutover unlock
/// ID` may remove it). `CUTOVER_S3_LEASE_SECS` overrides it (tests, slow links); the holder
/// writes its lease into the lock, and readers use that one.
pub const LEASE: Duration = Duration::from_secs(60);

pub fn lease() -> Duration {
    std::env::var("CUTOVER_S3_LEASE_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(LEASE, Duration::from_secs)
}

/// "Now" for the lock's own times (`started`, `heartbeat`: for people to read), shifted by
/// `CUTOVER_CLOCK_OFFSET_SECS` (a machine whose clock is off, for the tests). Nothing decides
/// on these times.
fn lock_now() -> String {
    let offset = std::env::var("CUTOVER_CLOCK_OFFSET_SECS")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0);
    let now = SystemTime::now();
    let shifted = if offset >= 0 {
        now.checked_add(Duration::from_secs(offset.unsigned_abs()))
    } else {
        now.checked_sub(Duration::from_secs(offset.unsigned_abs()))
    };
    humantime::format_rfc3339_millis(shifted.unwrap_or(now)).to_string()
}

/// The lock as `lock.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteLockInfo {
    pub id: String,
    /// `user@host`.
    pub holder: String,
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub started: String,
    /// Rewritten at each renewal, by the holder's clock: for people, not for deciding.
    pub heartbeat: String,
    /// The holder's lease; readers judge staleness by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// How long ago S3 last saw it written, by S3's clock (when S3 said).
    #[serde(skip)]
    pub silent: Option<Duration>,
}

impl RemoteLockInfo {
    /// The lease its holder keeps (this machine's when the lock does not say).
    pub fn lease(&self) -> Duration {
        self.lease_secs.map_or_else(lease, Duration::from_secs)
    }

    /// Stale: S3 has not seen it renewed for more than its lease.
    pub fn is_stale(&self) -> bool {
        self.silent.is_some_and(|s| s > self.lease())
    }

    pub fn describe(&self) -> String {
        let renewed = match self.silent {
            Some(s) => format!("last renewed {} ago by S3's clock", crate::clock::short(s)),
            None => "S3 did not say when it was last renewed".to_string(),
        };
        format!(
            "{} (pid {} on {}, `{}`, since {}, {renewed}, lock id {})",
            self.holder, self.pid, self.host, self.command, self.started, self.id
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteLockError {
    #[error("another driver holds the S3 lock: {}", .0.describe())]
    Held(Box<RemoteLockInfo>),
    #[error("the S3 lock is stale: {} — S3 has not seen it renewed for more than its {}s lease (the driver died, is stopped, or lost its network); once you know it is gone: cutover unlock {}", .0.describe(), .0.lease().as_secs(), .0.id)]
    Stale(Box<RemoteLockInfo>),
    #[error("the S3 lock is held and alive: {} — it is not removed", .0.describe())]
    Alive(Box<RemoteLockInfo>),
    #[error("the lock id is {actual}, not {given}; nothing was removed")]
    WrongId { given: String, actual: String },
    #[error("nobody holds the S3 lock")]
    NotHeld,
    #[error("the S3 lock changed while it was being removed (someone took it over): nothing was removed")]
    Changed,
    #[error(transparent)]
    S3(#[from] S3Error),
}

/// What the holder knows of its lock.
struct Holding {
    info: RemoteLockInfo,
    etag: String,
    /// When the last accepted renewal (or the acquisition) was sent, by both clocks.
    sent: (Instant, SystemTime),
}

/// The holder's lease on the S3 lock, shared by its heartbeat, its journal store and its log
/// shipper. See the module's notes.
pub struct Lease {
    remote: Arc<Remote>,
    length: Duration,
    holding: Mutex<Holding>,
    /// One renewal at a time: two at once would refuse each other.
    renewing: Mutex<()>,
    lost: CancellationToken,
    why: Mutex<Option<String>>,
}

/// How a renewal ended.
enum Renewal {
    Renewed,
    /// The lock is not ours any more (the lease is lost).
    Lost(String),
    /// S3 did not answer, or failed: the lease may still hold.
    Failed(S3Error),
}

impl Lease {
    /// The lock's id.
    pub fn id(&self) -> String {
        self.info().id
    }

    pub fn info(&self) -> RemoteLockInfo {
        self.holding
            .lock()
            .map(|h| h.info.clone())
            .unwrap_or_else(|p| p.into_inner().info.clone())
    }

    fn etag(&self) -> String {
        self.holding
            .lock()
            .map(|h| h.etag.clone())
            .unwrap_or_else(|p| p.into_inner().etag.clone())
    }

    /// Time since the last accepted renewal was sent: the larger of the monotonic and the wall
    /// clock's (a suspended machine's monotonic clock stands still; its wall clock does not).
    fn since_renewal(&self) -> Duration {
        let (mono, wall) = self
            .holding
            .lock()
            .map(|h| h.sent)
            .unwrap_or_else(|p| p.into_inner().sent);
        mono.elapsed()
            .max(SystemTime::now().duration_since(wall).unwrap_or_default())
    }

    /// How long appends may still go out before the lease must be renewed: no other driver
    /// can hold the lock within three quarters of a lease of an accepted renewal.
    pub fn valid_for(&self) -> Duration {
        (self.length * 3 / 4).saturating_sub(self.since_renewal())
    }

    /// Fired once, when this driver no longer holds the lock (or cannot prove it does).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Why the lease was lost.
    pub fn lost_why(&self) -> Option<String> {
        self.why.lock().ok().and_then(|w| w.clone())
    }

    /// Gives the lease up for good: says why (once), and fires [`Lease::lost`].
    pub(crate) fn lose(&self, why: String) {
        if let Ok(mut slot) = self.why.lock() {
            if slot.is_none() {
                tracing::warn!("{why}");
                *slot = Some(why);
            }
        }
        self.lost.cancel();
    }

    /// Before an append: the lease holds for the write to go out, renewed first when half of
    /// it is gone. `Err` says why this driver may not write.
    pub fn ensure(&self) -> Result<(), String> {
        if self.is_lost() {
            return Err(self.lost_why().unwrap_or_default());
        }
        if self.since_renewal() <= self.length / 2 {
            return Ok(());
        }
        match self.renew(None) {
            Renewal::Renewed => Ok(()),
            Renewal::Lost(why) => Err(why),
            Renewal::Failed(e) if self.valid_for().is_zero() => {
                let why = format!(
                    "the S3 lock could not be renewed within its {}s lease ({e}): this driver stops",
                    self.length.as_secs()
                );
                self.lose(why.clone());
                Err(why)
            }
            Renewal::Failed(e) => {
                tracing::warn!(error = %e, "the S3 lock's renewal failed; the lease still holds");
                Ok(())
            }
        }
    }

    /// One renewal: the lock rewritten with `If-Match` on its ETag.
    fn renew(&self, deadline: Option<Instant>) -> Renewal {
        let _one = self.renewing.lock();
        for _ in 0..2 {
            if self.is_lost() {
                return Renewal::Lost(self.lost_why().unwrap_or_default());
            }
            let sent = (Instant::now(), SystemTime::now());
            let mut info = self.info();
            info.heartbeat = lock_now();
            let Ok(body) = serde_json::to_vec_pretty(&info) else {
                return Renewal::Failed(S3Error::Local("cannot encode the lock".into()));
            };
            let written = match self.remote.put_conditional(
                "lock.json",
                body.clone(),
                Condition::Match(self.etag()),
                deadline,
            ) {
                Ok(Put::Written(etag)) => etag,
                // Refused: the lock as it is now says whose it is.
                Ok(Put::Refused) => match self.remote.get_until("lock.json", deadline) {
                    // This renewal landed, its answer lost (the SDK's retry was refused).
                    Ok(Some(object)) if object.bytes == body => object.etag,
                    Ok(current) => {
                        let current = current.and_then(|o| {
                            let mut held: RemoteLockInfo = serde_json::from_slice(&o.bytes).ok()?;
                            held.silent = o.age;
                            Some((held, o.etag))
                        });
                        match current {
                            // Still ours: an earlier renewal, given up on, landed after all.
                            // Its ETag, and once more.
                            Some((held, etag)) if held.id == info.id => {
                                if let Ok(mut holding) = self.holding.lock() {
                                    holding.etag = etag;
                                }
                                continue;
                            }
                            other => {
                                let now = other.map_or_else(
                                    || "nobody holds it now".to_string(),
                                    |(held, _)| format!("it is now {}", held.describe()),
                                );
                                let why = format!(
                                    "this driver lost the S3 lock (removed or taken over while it did not renew it: {now}): it stops, and writes nothing more to the journal"
                                );
                                self.lose(why.clone());
                                return Renewal::Lost(why);
                            }
                        }
                    }
                    Err(e) => return Renewal::Failed(e),
                },
                Err(e) => return Renewal::Failed(e),
            };
            if let Ok(mut holding) = self.holding.lock() {
                holding.etag = written;
                holding.info = info;
                holding.sent = sent;
            }
            return Renewal::Renewed;
        }
        Renewal::Failed(S3Error::Local(
            "the S3 lock changed under each renewal".into(),
        ))
    }
}

/// Held while this process drives; its lease renewed in the background; removed (only if
/// still ours) when dropped.
pub struct RemoteLock {
    lease: Arc<Lease>,
    stop: Arc<AtomicBool>,
    beat: Option<std::thread::JoinHandle<()>>,
}

impl RemoteLock {
    pub fn info(&self) -> RemoteLockInfo {
        self.lease.info()
    }

    /// The lease, for the journal store and the log shipper.
    pub fn lease(&self) -> Arc<Lease> {
        self.lease.clone()
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(beat) = self.beat.take() {
            let _ = beat.join();
        }
        if self.lease.is_lost() {
            return;
        }
        let _one = self.lease.renewing.lock();
        let etag = self.lease.etag();
        match self.lease.remote.delete_if_match("lock.json", &etag) {
            Ok(true) => {}
            Ok(false) => tracing::warn!("the S3 lock was no longer ours when released"),
            Err(e) => tracing::warn!(error = %e, "the S3 lock was not released"),
        }
    }
}

/// Takes the S3 lock, or says who holds it (and whether S3 says that holder is stale).
pub fn acquire(
    remote: Arc<Remote>,
    holder: &str,
    command: &str,
) -> Result<RemoteLock, RemoteLockError> {
    let now = lock_now();
    let length = lease();
    let info = RemoteLockInfo {
        id: crate::journal::lock::new_id(holder),
        holder: holder.to_string(),
        host: crate::actor::hostname(),
        pid: std::process::id(),
        command: command.to_string(),
        started: now.clone(),
        heartbeat: now,
        lease_secs: Some(length.as_secs()),
        silent: None,
    };
    let body = serde_json::to_vec_pretty(&info).map_err(|e| S3Error::Local(e.to_string()))?;
    // Refused: who holds it. Released between the write and the read: try again (a few times).
    let mut taken = None;
    for _ in 0..3 {
        let sent = (Instant::now(), SystemTime::now());
        if let Put::Written(etag) = remote.put_if_absent("lock.json", body.clone())? {
            taken = Some((etag, sent));
            break;
        }
        match read_lock(&remote)? {
            // Our own write, its answer lost and the SDK's retry refused.
            Some((held, etag)) if held.id == info.id => {
                taken = Some((etag, sent));
                break;
            }
            Some((held, _)) if held.is_stale() => {
                return Err(RemoteLockError::Stale(Box::new(held)))
            }
            Some((held, _)) => return Err(RemoteLockError::Held(Box::new(held))),
            None => continue,
        }
    }
    let Some((etag, sent)) = taken else {
        return Err(RemoteLockError::NotHeld);
    };
    let lease = Arc::new(Lease {
        remote,
        length,
        holding: Mutex::new(Holding { info, etag, sent }),
        renewing: Mutex::new(()),
        lost: CancellationToken::new(),
        why: Mutex::new(None),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let beat = {
        let (lease, stop) = (lease.clone(), stop.clone());
        std::thread::Builder::new()
            .name("cutover-s3-heartbeat".into())
            .spawn(move || heartbeat(&lease, &stop))
            .map_err(|e| S3Error::Runtime(e.to_string()))?
    };
    Ok(RemoteLock {
        lease,
        stop,
        beat: Some(beat),
    })
}

/// Every quarter lease, a renewal; the lease lost when one is refused, or when none is
/// accepted within it (each renewal waits no longer than what is left of the lease, and at
/// least a quarter of it).
fn heartbeat(lease: &Lease, stop: &AtomicBool) {
    let every = lease.length / 4;
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) && !lease.is_lost() {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() < every || stop.load(Ordering::SeqCst) {
            continue;
        }
        last = Instant::now();
        let deadline = Instant::now() + lease.valid_for().max(every);
        match lease.renew(Some(deadline)) {
            Renewal::Renewed => {}
            Renewal::Lost(_) => return,
            Renewal::Failed(e) if lease.valid_for().is_zero() => {
                lease.lose(format!(
                    "the S3 lock could not be renewed within its {}s lease ({e}): this driver stops, and writes nothing more to the journal",
                    lease.length.as_secs()
                ));
                return;
            }
            Renewal::Failed(e) => {
                tracing::warn!(error = %e, "the S3 lock's renewal failed; retrying within its lease")
            }
        }
    }
}

fn read_lock(remote: &Remote) -> Result<Option<(RemoteLockInfo, String)>, S3Error> {
    Ok(remote.get("lock.json")?.and_then(|o| {
        let mut info = serde_json::from_slice::<RemoteLockInfo>(&o.bytes).ok()?;
        info.silent = o.age;
        Some((info, o.etag))
    }))
}

/// Who holds the S3 lock, if anyone (with how long ago S3 saw it renewed).
pub fn holder(remote: &Remote) -> Result<Option<RemoteLockInfo>, S3Error> {
    Ok(read_lock(remote)?.map(|(i, _)| i))
}

/// Removes a stale lock whose id is `id`, only if it is still the lock that was read (its
/// ETag): a lock renewed or taken over in between is not removed. When S3 gives no times, the
/// lock is watched for a whole lease on this machine's clock: unchanged, it is stale.
pub fn unlock(remote: &Remote, id: &str) -> Result<RemoteLockInfo, RemoteLockError> {
    let Some((info, etag)) = read_lock(remote)? else {
        return Err(RemoteLockError::NotHeld);
    };
    if info.id != id {
        return Err(RemoteLockError::WrongId {
            given: id.to_string(),
            actual: info.id,
        });
    }
    let stale = match info.silent {
        Some(_) => info.is_stale(),
        None => {
            std::thread::sleep(info.lease() + Duration::from_secs(1));
            read_lock(remote)?.is_some_and(|(_, now)| now == etag)
        }
    };
    if !stale {
        return Err(RemoteLockError::Alive(Box::new(info)));
    }
    if remote.delete_if_match("lock.json", &etag)? {
        Ok(info)
    } else {
        Err(RemoteLockError::Changed)
    }
}
