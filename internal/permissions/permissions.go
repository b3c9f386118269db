// Package permissions is the least-privilege NATS permission set of each flashpipe
// role: which subjects it may publish to and subscribe to, JetStream API, KV and
// acknowledgement subjects included, derived from what each service does. Render
// writes it as nats-server configuration; deploy/nats/permissions.conf is its
// rendering for the default prefix and docs/security.md explains it. A test runs the
// whole pipeline against a server that grants exactly these permissions, each
// service as its own user, so the table, the file and the code cannot drift apart.
//
// Streams are created and changed by the admin role only; every other role may read
// their configuration ($JS.API.STREAM.INFO) but not change it. KV buckets likewise,
// with one exception: the processors may create the rate limit bucket, which lives in
// memory and is gone after a server restart.
package permissions

import (
	"fmt"
	"slices"
	"strings"

	"github.com/flashpipe/flashpipe/internal/beacon"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/ratelimit"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/spend"
)

// Rule allows one subject (wildcards allowed) and says why.
type Rule struct {
	Subject string
	Why     string
}

// Role is what one kind of client may do.
type Role struct {
	// Name is the role's name: admin, processor, sequencer, sink, submit, reader.
	Name string
	// Description says who takes the role.
	Description string
	// Publish and Subscribe are the subjects allowed; everything else is denied.
	Publish, Subscribe []Rule
}

// Role names.
const (
	Admin     = "admin"
	Processor = "processor"
	Sequencer = "sequencer"
	Sink      = "sink"
	Submit    = "submit"
	Reader    = "reader"
)

// Variable is the configuration variable Render defines for a role, e.g.
// FLASHPIPE_PROCESSOR.
func Variable(c *contract.Contract, role string) string {
	return c.Name(strings.ToUpper(role))
}

// Roles returns every role's permissions for the contract c (its prefix and stream
// names), with the default durable consumer names.
func Roles(c *contract.Contract) []Role {
	p := c.Prefix()
	kv := func(suffix string) string { return c.Name(suffix) }
	cacheB, limitB, ledgerB, leaseB := kv(cache.DefaultBucketSuffix), kv(ratelimit.DefaultBucketSuffix),
		kv(processor.LedgerBucketSuffix), kv(sequencer.LeaseBucketSuffix)
	servicesB, registryB, scheduleB := kv(beacon.BucketSuffix), c.RegistryBucket(), c.ScheduleBucket()
	spendB := kv(spend.DefaultBucketSuffix)

	inbox := []Rule{{"_INBOX.>", "replies to its requests: JetStream API answers, publish acknowledgements, messages pulled from consumers"}}
	start := []Rule{{"$JS.API.INFO", "check that JetStream answers"}}
	for _, s := range []string{c.BatchesStream(), c.ItemsStream(), c.ReadyStream(), c.ResultsStream(), c.OrderedStream(), c.RefusedStream()} {
		start = append(start, Rule{"$JS.API.STREAM.INFO." + s, "check the stream's configuration at start-up"})
	}
	start = append(start, Rule{"$JS.API.STREAM.INFO.KV_" + registryB, "check that the batch id registry exists at start-up"})
	alive := bucket(servicesB, "say it is alive, and whether it is blocked and why (its beacon)", false)

	return []Role{
		{
			Name:        Admin,
			Description: "creates and updates the streams, KV buckets and consumers (flashpipe streams apply); clears the cache (flashpipe cache); never used by a service",
			Publish: []Rule{
				{"$JS.API.>", "the whole JetStream API"},
				{"$KV.>", "write and delete KV entries (cache clear)"},
				{"$JS.ACK.>", "acknowledge messages of any consumer"},
				{"$JS.FC.>", "flow control of KV watches"},
			},
			Subscribe: inbox,
		},
		{
			Name:        Processor,
			Description: "`flashpipe processor`: items through the two LLM stages",
			Publish: concat(start,
				durable(c.ReadyStream(), processor.DefaultDurable, "the items the scheduler dispatches"),
				[]Rule{{p + ".results.>", "publish results"}},
				bucket(cacheB, "read and write cached answers", false),
				bucket(cacheB+cache.ClaimsBucketSuffix, "claim an answer before paying for it, so that replicas pay once", false),
				[]Rule{{"$JS.API.STREAM.CREATE.KV_" + cacheB + cache.ClaimsBucketSuffix, "re-create the claims bucket, kept in memory, after a server restart"}},
				bucket(ledgerB, "count items released by the circuit breaker", false),
				bucket(kv(processor.ProviderBatchBucketSuffix), "record provider batches before submitting them, claim their requests, and find unfinished ones (batch mode)", true),
				bucket(spendB, "reserve each API call's worst case under the spend caps, then settle it to its cost", false),
				bucket(limitB, "share the API rate limit", true),
				[]Rule{{"$JS.API.STREAM.CREATE.KV_" + limitB, "re-create the rate limit bucket, kept in memory, after a server restart"}},
				bucket(limitB+ratelimit.ReplicasBucketSuffix, "count the live replicas sharing the rate limit (heartbeats)", false),
				[]Rule{{"$JS.API.STREAM.CREATE.KV_" + limitB + ratelimit.ReplicasBucketSuffix, "re-create the heartbeat bucket, kept in memory, after a server restart"}},
				alive,
			),
			Subscribe: concat(inbox, []Rule{{"$KV." + cacheB + cache.ClaimsBucketSuffix + ".>", "hear a claim released, to read the answer another replica paid for"}}),
		},
		{
			Name:        Sequencer,
			Description: "`flashpipe sequencer`: results back into batch order, and the scheduler beside it (items dispatched to the processors in fair order)",
			Publish: concat(start,
				durable(c.BatchesStream(), sequencer.DefaultDurable, "the manifests"),
				ordered(c.ResultsStream(), p+".results.>", "read the results as they arrive"),
				direct(c.ResultsStream(), "read one result by its subject"),
				direct(c.OrderedStream(), "read a batch's last ordered event (its cursor)"),
				[]Rule{{p + ".ordered.>", "append ordered events"}},
				bucket(leaseB, "take, renew and release batch leases, and the scheduler's", false),
				bucket(registryB, "admit manifests published by any client against the batch id registry", false),
				[]Rule{{p + ".refused.>", "record refused manifests, items and results"}},
				durable(c.BatchesStream(), scheduler.DefaultDurable, "the manifests (scheduler)"),
				[]Rule{
					{"$JS.API.CONSUMER.CREATE." + c.ItemsStream() + "." + scheduler.DefaultAuditDurable + ".>", "the scheduler's audit of the items (headers only)"},
					{"$JS.API.CONSUMER.CREATE." + c.ItemsStream() + "." + scheduler.DefaultAuditDurable, "the same, without the filter in the subject"},
					{"$JS.API.CONSUMER.MSG.NEXT." + c.ItemsStream() + "." + scheduler.DefaultAuditDurable, "read the items' headers"},
				},
				direct(c.ItemsStream(), "read the items to dispatch (several last messages at once)"),
				direct(c.BatchesStream(), "read a batch's latest manifest (audit)"),
				[]Rule{
					{p + ".ready.>", "dispatch items to the processors"},
					{p + ".results.>", "fail in place an item that cannot be valid or was never published (no API call)"},
					{"$JS.API.CONSUMER.INFO." + c.ReadyStream() + "." + processor.DefaultDurable, "size the dispatch window"},
				},
				bucket(scheduleB, "keep the generations being dispatched and their cursors", true),
				bucket(spendB, "see which batches a spend cap pauses (none of their items is dispatched meanwhile), and dispatch again the items the processors set aside once the cap allows", true),
				alive,
			),
			Subscribe: inbox,
		},
		{
			Name:        Sink,
			Description: "`flashpipe sink` and `flashpipe replay`: ordered events into the database",
			Publish: concat(start,
				durable(c.OrderedStream(), sink.DefaultDurable, "the ordered events"),
				ordered(c.OrderedStream(), p+".ordered.>", "replay a batch's ordered log"),
				alive,
			),
			Subscribe: inbox,
		},
		{
			Name:        Submit,
			Description: "`flashpipe submit`, `retry` and `reprocess` (ingest), with --wait and --dry-run, and `flashpipe cap`",
			Publish: concat(start,
				[]Rule{
					{p + ".batches.>", "publish manifests"},
					{p + ".items.>", "publish items"},
				},
				direct(c.BatchesStream(), "read a batch's latest manifest"),
				direct(c.ItemsStream(), "read published items (resubmission, retry)"),
				ordered(c.ItemsStream(), p+".items.>", "read a batch's items (retry, reprocess)"),
				follow(c),
				bucket(cacheB, "look answers up for a dry run's estimate", false)[:2],
				bucket(registryB, "record every batch id, and check a submitted one against it", false),
				bucket(spendB, "record a batch's max_cost as its spend cap; show and set the caps (flashpipe cap)", false),
				ordered(c.RefusedStream(), p+".refused.>", "read why its messages were refused"),
			),
			Subscribe: inbox,
		},
		{
			Name:        Reader,
			Description: "follows batches without changing anything (a dashboard, a batch's TSV while it runs) and shows the live queue, refusals and services (status with --nats-url); export reads the database and needs no NATS user",
			Publish: concat(start, follow(c), watchOnly(servicesB, "list the live services and whether they are blocked (status)"),
				watchOnly(scheduleB, "list the batches queued for the processors (status)"),
				watchOnly(kv(processor.ProviderBatchBucketSuffix), "list the provider batches of batch mode (status)"),
				bucket(spendB, "show the spend caps and what was spent (status)", false)[:2],
				ordered(c.RefusedStream(), p+".refused.>", "read the refusals of a batch (status)")),
			Subscribe: inbox,
		},
	}
}

func concat(lists ...[]Rule) []Rule {
	var out []Rule
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// durable is what a service needs of its durable pull consumer on stream: create or
// update it (with or without a filter subject), pull and acknowledge.
func durable(stream, name, what string) []Rule {
	return []Rule{
		{"$JS.API.CONSUMER.CREATE." + stream + "." + name, "create or update its durable consumer of " + what},
		{"$JS.API.CONSUMER.CREATE." + stream + "." + name + ".>", "the same, with the filter subject in the request subject"},
		{"$JS.API.CONSUMER.INFO." + stream + "." + name, "read its consumer's state"},
		{"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + name, "pull " + what},
		{"$JS.ACK." + stream + "." + name + ".>", "acknowledge " + what},
	}
}

// ordered is what an ordered consumer on stream, filtered under filter, needs: it
// creates ephemeral consumers with generated names (and re-creates them after a gap),
// pulls from them and deletes them.
func ordered(stream, filter, why string) []Rule {
	return []Rule{
		{"$JS.API.CONSUMER.CREATE." + stream + ".*." + filter, why + ": ephemeral ordered consumers, filtered"},
		{"$JS.API.CONSUMER.MSG.NEXT." + stream + ".*", why + ": pull from them"},
		{"$JS.API.CONSUMER.INFO." + stream + ".*", why + ": read how far they are"},
		{"$JS.API.CONSUMER.DELETE." + stream + ".*", why + ": delete them when done"},
	}
}

// direct is reading single messages of stream by sequence or last by subject.
func direct(stream, why string) []Rule {
	return []Rule{
		{"$JS.API.DIRECT.GET." + stream, why + " (by sequence)"},
		{"$JS.API.DIRECT.GET." + stream + ".>", why + " (last by subject)"},
	}
}

// bucket is what a KV user of bucket needs: its configuration, reading keys, writing
// them, and with watch, watching keys (an ephemeral push consumer with flow control).
// Its first two rules are the read-only part.
func bucket(name, why string, watch bool) []Rule {
	s := "KV_" + name
	rules := []Rule{
		{"$JS.API.STREAM.INFO." + s, why + ": the bucket's configuration"},
		{"$JS.API.DIRECT.GET." + s + ".>", why + ": read keys"},
		{"$KV." + name + ".>", why + ": write keys"},
	}
	if watch {
		rules = append(rules,
			Rule{"$JS.API.CONSUMER.CREATE." + s + ".>", why + ": watch keys"},
			Rule{"$JS.API.CONSUMER.DELETE." + s + ".*", why + ": stop watching"},
			Rule{"$JS.FC." + s + ".>", why + ": flow control of the watch"},
		)
	}
	return rules
}

// watchOnly is reading a bucket's keys by watching it, without writing.
func watchOnly(name, why string) []Rule {
	rules := bucket(name, why, true)
	return append(rules[:2:2], rules[3:]...)
}

// follow is reading a batch's ordered log as it grows (submit --wait, batchlog) and
// the processors' backlog for the progress display.
func follow(c *contract.Contract) []Rule {
	return concat(
		ordered(c.OrderedStream(), c.Prefix()+".ordered.>", "follow a batch's ordered log"),
		direct(c.OrderedStream(), "read a batch's ordered events"),
		[]Rule{{"$JS.API.CONSUMER.INFO." + c.ReadyStream() + "." + processor.DefaultDurable, "show the processors' backlog"}},
	)
}

// Render writes the roles as nats-server configuration: one variable per role
// (FLASHPIPE_PROCESSOR, ...) holding its permissions, to include in a server
// configuration and give to users (see docs/security.md).
func Render(c *contract.Contract) string { return RenderRoles(c, Roles(c)) }

// RenderRoles is Render for the given roles (a test takes one permission away).
func RenderRoles(c *contract.Contract, roles []Role) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# flashpipe: least-privilege NATS permissions for the subject prefix %q.
# Generated from internal/permissions; see docs/security.md. For another prefix:
#   flashpipe streams permissions --prefix %s
#
# One variable per role. Include this file at the top of the server configuration and
# give each service a user of its own, for example:
#
#   include "permissions.conf"
#   authorization {
#     users = [
#       {user: processor, password: $PROCESSOR_PASSWORD, permissions: $%s}
#       {user: sequencer, password: $SEQUENCER_PASSWORD, permissions: $%s}
#       ...
#     ]
#   }
`, c.Prefix(), c.Prefix(), Variable(c, Processor), Variable(c, Sequencer))
	for _, r := range roles {
		fmt.Fprintf(&b, "\n# %s: %s\n%s = {\n", r.Name, r.Description, Variable(c, r.Name))
		section(&b, "publish", r.Publish)
		section(&b, "subscribe", r.Subscribe)
		b.WriteString("}\n")
	}
	return b.String()
}

func section(b *strings.Builder, name string, rules []Rule) {
	fmt.Fprintf(b, "  %s: {\n    allow: [\n", name)
	width := 0
	for _, r := range rules {
		width = max(width, len(r.Subject))
	}
	for _, r := range rules {
		fmt.Fprintf(b, "      %-*s # %s\n", width+3, fmt.Sprintf("%q,", r.Subject), r.Why)
	}
	b.WriteString("    ]\n  }\n")
}

// Markdown summarises the roles as a Markdown table, one row per role: the durable and
// ordered consumers, the subjects it publishes messages to, the streams it reads by
// direct get, the KV buckets it reads, writes, watches or creates, and what it
// subscribes to. Every rule of a role lands in one cell (a rule of no known shape is
// listed as is), so the table in docs/security.md, generated from it, cannot leave a
// permission out. The start-up checks every service role has ($JS.API.INFO, the
// configuration of the streams and of the batch id registry) are said once, above it.
func Markdown(c *contract.Contract) string {
	var b strings.Builder
	b.WriteString("| role | who | consumers | publishes messages to | direct gets on | KV buckets | subscribes |\n|---|---|---|---|---|---|---|\n")
	startSubjects := map[string]bool{"$JS.API.INFO": true, "$JS.API.STREAM.INFO.KV_" + c.RegistryBucket(): true}
	for _, s := range []string{c.BatchesStream(), c.ItemsStream(), c.ReadyStream(), c.ResultsStream(), c.OrderedStream(), c.RefusedStream()} {
		startSubjects["$JS.API.STREAM.INFO."+s] = true
	}
	for _, r := range Roles(c) {
		var consumers, publishes, directs, buckets, other []string
		seen := map[string]bool{}
		add := func(list *[]string, s string) {
			if !seen[s] {
				seen[s] = true
				*list = append(*list, s)
			}
		}
		kv := map[string][]string{} // bucket -> read, write, watch, create
		var kvOrder []string
		kvAdd := func(bucket, what string) {
			if _, ok := kv[bucket]; !ok {
				kvOrder = append(kvOrder, bucket)
			}
			if !slices.Contains(kv[bucket], what) {
				kv[bucket] = append(kv[bucket], what)
			}
		}
		// The consumers first, so that their other rules (create, info, ack) are
		// recognised as theirs whatever the order.
		for _, rule := range r.Publish {
			parts := strings.Split(rule.Subject, ".")
			switch {
			case r.Name == Admin:
			case strings.HasPrefix(rule.Subject, "$JS.API.CONSUMER.MSG.NEXT.") && len(parts) == 7 && parts[6] != "*":
				add(&consumers, "durable `"+parts[6]+"` on `"+parts[5]+"`")
			case strings.HasPrefix(rule.Subject, "$JS.API.CONSUMER.CREATE.") && len(parts) > 6 && parts[5] == "*":
				add(&consumers, "ordered on `"+parts[4]+"`")
			}
		}
		for _, rule := range r.Publish {
			s := rule.Subject
			parts := strings.Split(s, ".")
			switch {
			case r.Name == Admin:
				add(&other, "`"+s+"`")
			case startSubjects[s]:
			case !strings.HasPrefix(s, "$"):
				add(&publishes, "`"+s+"`")
			case strings.HasPrefix(s, "$KV.") && len(parts) >= 3:
				kvAdd(parts[1], "write")
			case strings.HasPrefix(s, "$JS.API.STREAM.INFO.KV_"):
				kvAdd(strings.TrimPrefix(parts[4], "KV_"), "read")
			case strings.HasPrefix(s, "$JS.API.STREAM.CREATE.KV_"):
				kvAdd(strings.TrimPrefix(parts[4], "KV_"), "create")
			case strings.HasPrefix(s, "$JS.API.DIRECT.GET.KV_"):
				kvAdd(strings.TrimPrefix(parts[4], "KV_"), "read")
			case strings.HasPrefix(s, "$JS.API.CONSUMER.CREATE.KV_"), strings.HasPrefix(s, "$JS.API.CONSUMER.DELETE.KV_"):
				kvAdd(strings.TrimPrefix(parts[4], "KV_"), "watch")
			case strings.HasPrefix(s, "$JS.FC.KV_"):
				kvAdd(strings.TrimPrefix(parts[2], "KV_"), "watch")
			case strings.HasPrefix(s, "$JS.API.DIRECT.GET.") && len(parts) >= 5:
				add(&directs, "`"+parts[4]+"`")
			case strings.HasPrefix(s, "$JS.API.CONSUMER.INFO.") && len(parts) == 6 && parts[5] != "*":
				if !slices.Contains(consumers, "durable `"+parts[5]+"` on `"+parts[4]+"`") {
					add(&consumers, "state of `"+parts[5]+"` on `"+parts[4]+"`")
				}
			case strings.HasPrefix(s, "$JS.API.CONSUMER.") || strings.HasPrefix(s, "$JS.ACK."):
				// the rest of a durable's or an ordered consumer's rules, named above:
				// create, info, delete, acknowledge.
				if !coveredConsumerRule(parts, consumers) {
					add(&other, "`"+s+"`")
				}
			default:
				add(&other, "`"+s+"`")
			}
		}
		for _, name := range kvOrder {
			buckets = append(buckets, "`"+name+"` ("+strings.Join(kv[name], ", ")+")")
		}
		var subs []string
		for _, rule := range r.Subscribe {
			subs = append(subs, "`"+rule.Subject+"`")
		}
		publishes = append(publishes, other...)
		cell := func(l []string) string {
			if len(l) == 0 {
				return "-"
			}
			return strings.Join(l, ", ")
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s | %s |\n", r.Name, strings.ReplaceAll(r.Description, "|", "\\|"),
			cell(consumers), cell(publishes), cell(directs), cell(buckets), cell(subs))
	}
	return b.String()
}

// coveredConsumerRule reports whether a $JS.API.CONSUMER or $JS.ACK rule belongs to a
// consumer already listed (durable by name, or ordered on its stream).
func coveredConsumerRule(parts []string, consumers []string) bool {
	var stream, name string
	switch {
	case parts[1] == "ACK" && len(parts) >= 4:
		stream, name = parts[2], parts[3]
	case len(parts) >= 7 && parts[3] == "MSG":
		stream, name = parts[5], parts[6]
	case len(parts) >= 6:
		stream, name = parts[4], parts[5]
	default:
		return false
	}
	if name == "*" {
		return slices.Contains(consumers, "ordered on `"+stream+"`")
	}
	return slices.Contains(consumers, "durable `"+name+"` on `"+stream+"`")
}
