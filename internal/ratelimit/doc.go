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
// the spacing of requests. The key "<key>.sched" holds the schedule's end (GCRA's
// "theoretical arrival time") and the clock of the replica that wrote it, both Unix
// nanoseconds. A replica with callers waiting leases k requests at once, one for each
// caller that has none yet: the lease starts at max(end, now), its requests take the
// slots start, start+T, ... start+(k-1)T, and the key moves to start+kT. The write is a
// compare-and-set (kv.Create for the first lease ever, kv.Update with the revision read
// otherwise). A lease is granted however far ahead its slots are: the replica holds
// its requests and hands each part of at most a chunk of max(1, R·Window/16) requests
// to its waiting callers, first come first served, from Window/2 before the part's
// last slot on. A request no caller takes (the caller gave up) expires Window/2 - T
// after its slot.
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
// # Coordination cost with many replicas
//
// No replica owns a share: replicas lease only for callers waiting in Wait, so an idle
// replica holds nothing and a busy one can use all of the budget. A lease is never
// refused, so no replica polls a full schedule, and replicas do not wake up together:
// each leases when its own callers come back. When the schedule is saturated (its end,
// as last seen, is more than Window/2 + Window/16 ahead), a lease taken now would start
// at that end anyway, so the replica first waits Window/16 for more of its callers and
// leases for all of them at once; it does the same after a lease that collided with
// another replica's, since fewer, larger leases collide less. A compare-and-set that
// loses to another replica is retried after a random pause of up to u·2^(attempt-1), u
// the recent duration of one attempt (at least 0.5 ms; at most 250 ms in all), so
// replicas that collided spread out instead of colliding again, however slow the
// server is. The KV traffic is therefore at most one lease per request granted (R per
// second) whatever the number of replicas, and at most 16 leases per second per
// replica once the schedule is saturated or contended; conflicts stay rare (measured
// with 4, 16 and 100 saturating replicas on one 10,000 RPM limit: BenchmarkReplicas,
// numbers in docs/capacity.md).
//
// A lease far ahead holds the budget for callers that wait for it; callers that give
// up leave their requests unused (the budget is not exceeded, only unused). After a
// 429, leased requests whose slots fall in the cooldown are dropped; later ones stay.
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
// limiter at budget × factor / n requests per second with a burst of one (starting
// empty), and the same share of the tokens budget counted over its own requests. n is
// the live replica count: every replica puts "<key>.<id>" into the replicas bucket
// (<Bucket>_REPLICAS, whose MaxAge is Config.HeartbeatTTL, 15 s by default) every
// HeartbeatTTL/3 and then counts the keys of its limit; the last count read before the
// outage is used. Requests it leased from the shared schedule and had not granted are
// dropped when it falls back. So when NATS goes away for all replicas at once, the
// shares add up to at most the budget: a replica stopped within the last HeartbeatTTL
// is still counted (its share is unused), and a replica that started less than two
// heartbeat periods ago, which the others may not count yet, spends nothing until NATS
// is back. Config.AssumedReplicas, when set, is a floor on n and vouches for the count
// (a new replica then spends its share at once). With n replicas the shares can add a
// burst of n requests after an idle spell, within the bound while n ≤ R·Window.
//
// What the fallback cannot see: a partition that cuts some replicas off while others
// still reach NATS. The others keep using the whole schedule, so each cut-off replica's
// share comes on top; a processor cut off from NATS cannot fetch items or publish
// results, so it only finishes the calls of the items in hand. Cooldowns apply to the
// replica alone during a fallback. It logs the fallback, probes every ProbeInterval
// (re-creating the buckets if the server lost them), and when the buckets answer again
// it restarts its watches, heartbeats, logs, and coordinates again. Wait never spins
// and never grants more than the share meanwhile.
//
// # Deployment notes
//
// The buckets (default <PREFIX>_RATELIMIT and <PREFIX>_RATELIMIT_REPLICAS) are in
// memory, keep one revision per key and have the contract's replica count: their state
// is worth seconds to minutes, and a server that restarts without them forgets at most
// a cooldown and the requests leased ahead. They use only compare-and-set, single-key
// watches, direct gets, a bucket-wide MaxAge and stream info, so they work with
// nats-server 2.9 and newer (no per-key TTLs, which need 2.11). Replicas compare their
// own clock with the schedule others wrote: keep clocks synchronised (NTP); a skew of d
// adds R·d to the bound, and a schedule written by a clock more than Window + T ahead
// of the local one is taken for skew, ignored and logged. All replicas sharing a Key
// must use the same RPM, TPM, Buffer, Window and HeartbeatTTL, and the same version of
// this package: the schedule's value changed in the version that added the live
// replica count, so stop every older processor before starting newer ones.
//
// A Limiter is safe for concurrent use by any number of goroutines.
package ratelimit
