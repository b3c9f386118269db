// Package ratelimit enforces one API rate limit shared by every processor replica: a
// requests-per-minute budget (and optionally a tokens-per-minute budget) that all
// replicas with the same Config.Key spend together, a shared cooldown after the API
// answers 429, and a shared rate factor that backs off on repeated 429s. The replicas
// coordinate through a JetStream key-value bucket; each one decides locally.
//
// # Use
//
// Call Wait before every API attempt, Observe with the tokens a finished request used
// (prompt plus completion), and Throttled when the API answered 429 (with the wait it
// asked for and its X-RateLimit-Reset). Close when done.
//
// # The request budget: a shared schedule
//
// Let R be the budget in requests per second: RPM × Buffer × factor / 60, and T = 1/R
// the spacing of requests. The key "<key>.sched" holds one number, the schedule's end
// (GCRA's "theoretical arrival time", Unix nanoseconds). A replica with callers waiting
// leases k requests at once: the lease starts at max(end, now), its requests take the
// slots start, start+T, ... start+(k-1)T, and it is granted only if its last slot is
// at most Window/2 ahead of now; the key then moves to start+kT. The write is a
// compare-and-set (kv.Create for the first lease ever, kv.Update with the revision read
// otherwise); a replica that loses the race reads again and retries, and one that finds
// the schedule full sleeps exactly until its lease fits. The leased requests go to the
// replica's waiting callers at once, first come first served; a request no caller takes
// (the caller gave up) expires Window/2 - T after its slot.
//
// The bound: every granted request has its own slot, slots are T apart, and a request
// is granted no earlier than Window/2 before its slot and no later than Window/2 - T
// after it. So over any interval of length t all replicas together are granted at most
// R·t + R·Window requests (when T ≤ Window/2; at lower rates R·t + R·Window/2 + 1). It
// holds up to one KV round trip (a lease is timed when the schedule is read) and up to
// the clock skew between replicas. With the default Window of 1 s that is one second
// of traffic above the rate: half the burst of an API that, like the simulator and
// OpenRouter, allows two seconds, leaving a second for network jitter.
//
// Why a schedule rather than per-slot counters ("<key>.slot.<n>"): counters reset at
// slot boundaries, so a full slot's worth just before and just after a boundary gives
// twice the rate for an instant (R·t + 2·R·Window), and every replica's unspent part of
// a lease is lost when its slot ends (with N busy replicas up to N chunks per slot).
// The schedule loses nothing: a lease taken late still starts at the schedule's end as
// long as that is ahead of now, so busy replicas together get the whole budget, and the
// bucket holds a handful of keys per limit that never need a TTL.
//
// No replica owns a share: replicas lease only for callers waiting in Wait, at most a
// chunk of max(1, R·Window/16) requests at a time, so an idle replica holds nothing and
// a busy one can use all of the budget. That also bounds the KV traffic: about 16
// leases per second per limit whatever the rate, plus the compare-and-set retries of
// replicas racing for the same slots.
//
// # Cooldown and rate factor
//
// "<key>.throttle" holds {until, factor, decreased}. Throttled(retryAfter, reset)
// starts a cooldown until the later of now+retryAfter and reset (DefaultCooldown if
// neither is in the future, at most MaxCooldown), extending a shorter one that is
// already there. If no cooldown was active (this 429 starts a new burst of 429s), it
// also multiplies the rate factor by DecreaseFactor (floor Config.MinRateFactor): a burst
// of 429s from many requests and replicas lowers the factor once. Both changes are one
// compare-and-set of that key, so "at most once per cooldown" holds across replicas.
// The factor recovers by RecoverStep every Config.RecoverEvery since it was lowered;
// every replica computes that from the stored value, so recovery needs no writes. Every
// replica watches the key (kv.Watch): Wait grants nothing until the cooldown ends, and
// all replicas spend factor × budget. Cooldowns and factor changes are logged
// (component=ratelimit).
//
// # The tokens budget
//
// With Config.TPM set, "<key>.tokens" holds the tokens Observe reported over the last
// minute, in one-second buckets. Observe adds to a local count that is merged into the
// key every FlushInterval (compare-and-set); replicas watch the key. Wait grants nothing
// while the tokens of the last minute (61 one-second buckets, to err on the safe side),
// flushed or not, reach TPM × Buffer × factor, and resumes when the oldest buckets
// leave the minute. A request's tokens are known only when it ends, so requests in
// flight are not counted: with C requests in flight of up to M tokens each the minute
// can overshoot by C·M. Choose Buffer with that in mind.
//
// # When NATS is unreachable
//
// When the connection is down or a KV operation fails (each is bounded by
// Config.OpTimeout), the replica falls back to a local share: a golang.org/x/time/rate
// limiter at budget × factor / Config.AssumedReplicas requests per second with a burst
// of one, and the same share of the tokens budget counted over its own requests. Set
// AssumedReplicas to the number of replicas you run (default 4): if more run, the sum
// can exceed the budget during the outage. Cooldowns then apply to this replica only.
// It logs the fallback, probes every ProbeInterval (re-creating the bucket if the
// server lost it), and when the bucket answers again it restarts its watches, logs, and
// coordinates again. Wait never spins and never grants more than the share meanwhile.
//
// # Deployment notes
//
// The bucket (default <PREFIX>_RATELIMIT) is in memory, keeps one revision per key and
// has the contract's replica count: its state is worth seconds to minutes, and a server
// that restarts without it forgets at most a cooldown and half a Window of schedule. It
// uses only compare-and-set, single-key watches and direct gets, so it works with
// nats-server 2.9 and newer (no per-key TTLs, which need 2.11). Replicas compare their
// own clock with the schedule others wrote: keep clocks synchronised (NTP); a skew of d
// adds R·d to the bound, and a schedule more than Window + T ahead of the local clock is
// taken for skew, ignored and logged. All replicas sharing a Key must use the same RPM,
// TPM, Buffer and Window.
//
// A Limiter is safe for concurrent use by any number of goroutines.
package ratelimit
