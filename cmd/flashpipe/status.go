package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
)

// liveStatus is what status shows from NATS: the queue, the refusals and the services.
// Each part is nil when it could not be read (status says why on stderr and shows the
// rest).
type liveStatus struct {
	queue    *app.Queue
	refused  map[string]int
	batch    []app.Refusal // the refusals of the batch asked about
	services []app.ServiceState
	// providers are the provider batches of batch mode (of the batch asked about).
	providers []app.ProviderBatch
	spend     *app.SpendAccount // the batch's, when it has a cap
	period    *app.SpendAccount // the period's, when a period cap is set
}

// live reads the live status when NATS is named; it never fails the command.
func (s *StatusCmd) live(ctx context.Context, log *slog.Logger) *liveStatus {
	if s.NATSURL == "" && s.Context == "" {
		return nil
	}
	nf := NATSFlags{NATSURL: s.NATSURL, NATSAuthFlags: s.NATSAuthFlags, StreamFlags: StreamFlags{Prefix: s.Prefix}}
	cfg := nf.natsConfig("flashpipe-status", false)
	cfg.ConnectTimeout = 3 * time.Second
	nc, js, c, err := nf.dial(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "flashpipe: queue, refusals and services not shown: %v\n", err)
		return nil
	}
	defer nc.Close()
	client, err := app.NewClient(js, c, app.ClientConfig{Logger: log})
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l := &liveStatus{}
	warn := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "flashpipe: %s not shown: %v\n", what, err)
	}
	if l.queue, err = client.Queue(ctx); err != nil {
		warn("queue", err)
	}
	if l.refused, err = client.RefusalCounts(ctx); err != nil {
		warn("refusals", err)
	}
	if s.ID != "" && l.refused[s.ID] > 0 {
		if l.batch, err = client.Refusals(ctx, s.ID, 5); err != nil {
			warn("refusals", err)
		}
	}
	if l.services, err = client.Services(ctx); err != nil {
		warn("services", err)
	}
	if l.providers, err = client.ProviderBatches(ctx, s.ID); err != nil {
		warn("provider batches", err)
	}
	if a, ok, err := client.PeriodSpend(ctx); err != nil {
		warn("period spend cap", err)
	} else if ok {
		l.period = &a
	}
	if s.ID != "" {
		if a, ok, err := client.BatchSpend(ctx, s.ID); err != nil {
			warn("spend cap", err)
		} else if ok {
			l.spend = &a
		}
	}
	if l.services == nil {
		l.services = []app.ServiceState{}
	}
	return l
}

// knows reports whether the queue or the refusals name the batch.
func (l *liveStatus) knows(id string) bool {
	if l == nil {
		return false
	}
	if l.queue != nil && slices.ContainsFunc(l.queue.Batches, func(b app.QueuedBatch) bool { return b.BatchID == id }) {
		return true
	}
	return l.refused[id] > 0
}

// print prints the queue by tenant and batch, the refusals by batch and the services.
func (l *liveStatus) print(w io.Writer) {
	if l == nil {
		return
	}
	if q := l.queue; q != nil {
		fmt.Fprintf(w, "\nqueue: %d batches waiting for the processors\n", len(q.Batches))
		if len(q.Batches) > 0 {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "  TENANT\tBATCHES\tWAITING\tAT PROCESSORS")
			for _, t := range q.Tenants {
				fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\n", tenantName(t.Tenant), t.Batches, t.Waiting, t.InProcessors)
			}
			_ = tw.Flush()
			fmt.Fprintln(w)
			tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "  TENANT\tBATCH\tGEN\tPRIORITY\tDISPATCHED\tWAITING\tAT PROCESSORS\tAHEAD\tSINCE")
			for _, b := range q.Batches {
				fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d/%d\t%d\t%d\t%d\t%s\n", tenantName(b.Tenant), b.BatchID, b.Generation, b.Priority,
					b.Dispatched, b.Items, b.Waiting, b.InProcessors, b.Ahead, b.Admitted.Local().Format(time.DateTime))
			}
			_ = tw.Flush()
		}
	}
	if len(l.refused) > 0 {
		ids := make([]string, 0, len(l.refused))
		total := 0
		for id, n := range l.refused {
			ids, total = append(ids, id), total+n
		}
		slices.Sort(ids)
		fmt.Fprintf(w, "\nrefused: %d messages kept (flashpipe status BATCH shows why)\n", total)
		for _, id := range ids {
			fmt.Fprintf(w, "  %s: %d\n", refusedName(id), l.refused[id])
		}
	}
	if len(l.providers) > 0 {
		fmt.Fprintln(w)
		printProviderBatches(w, l.providers, "")
	}
	l.printPeriod(w)
	printServices(w, l.services)
}

// printPeriod prints the period cap, when one is set.
func (l *liveStatus) printPeriod(w io.Writer) {
	if a := l.period; a != nil {
		fmt.Fprintf(w, "\nperiod spend cap: %s\n", a)
	}
}

// printBatch prints what the live status says of one batch: its place in the queue,
// its refusals and the services.
func (l *liveStatus) printBatch(w io.Writer, id string) {
	if l == nil {
		return
	}
	if l.queue != nil {
		for _, b := range l.queue.Batches {
			if b.BatchID != id {
				continue
			}
			fmt.Fprintf(w, "  queued (generation %d, tenant %s, priority %d): %d of %d items dispatched, %d at the processors, %d waiting",
				b.Generation, tenantName(b.Tenant), b.Priority, b.Dispatched, b.Items, b.InProcessors, b.Waiting)
			if b.Ahead > 0 {
				fmt.Fprintf(w, "; %d items of higher priority ahead", b.Ahead)
			}
			if b.MissingSince != nil {
				fmt.Fprintf(w, "; its next item has not been published since %s", b.MissingSince.Local().Format(time.DateTime))
			}
			fmt.Fprintln(w)
		}
	}
	if a := l.spend; a != nil {
		fmt.Fprintf(w, "  spend cap: %s\n", a)
	}
	if a := l.period; a != nil && a.Paused {
		fmt.Fprintf(w, "  %s\n", a.Reason())
	}
	if n := l.refused[id]; n > 0 {
		fmt.Fprintf(w, "  refused: %d messages about this batch", n)
		if len(l.batch) < n {
			fmt.Fprintf(w, " (the last %d)", len(l.batch))
		}
		fmt.Fprintln(w)
		for _, r := range l.batch {
			fmt.Fprintf(w, "    %s %s by the %s: %s\n", r.Time.Local().Format(time.DateTime), r.Subject, r.By, r.Reason)
		}
	}
	printProviderBatches(w, l.providers, "  ")
	printServices(w, l.services)
}

// printMetrics prints the metrics the store keeps for a batch: every result written,
// older generations' included.
func printMetrics(w io.Writer, m *flashpipe.BatchMetrics) {
	if m == nil {
		return
	}
	fmt.Fprintf(w, "  metrics (%s mode, %d results written, retries included): calls stage 1 %d, stage 2 %d; cache hit rate %.1f%% (%d of %d)\n",
		m.Mode, m.Results, m.Stage1Calls, m.Stage2Calls, 100*m.CacheHitRate, m.CacheHits, m.CacheHits+m.CacheMisses)
	fmt.Fprintf(w, "    retries %d; 429s %d; rate-limit waits %d (%s); breaker waits %d, trips %d\n",
		m.Retries, m.Throttled, m.RateLimitWaits, (time.Duration(m.RateLimitWaitMS) * time.Millisecond).String(),
		m.BreakerWaits, m.BreakerTrips)
	fmt.Fprintf(w, "    cost settled $%.4f, reserved $%.4f; wall time %s (first result to last)\n",
		m.CostSettled, m.CostReserved, (time.Duration(m.WallTimeMS) * time.Millisecond).String())
}

func tenantName(t string) string {
	if t == "" {
		return "(default)"
	}
	return t
}

func refusedName(id string) string {
	if id == "_" {
		return "(no valid batch id)"
	}
	return id
}

// printServices prints the live services, the blocked ones with why.
func printServices(w io.Writer, states []app.ServiceState) {
	if states == nil {
		return
	}
	fmt.Fprintf(w, "\nservices: %d live\n", len(states))
	for _, st := range states {
		line := fmt.Sprintf("  %s %s: running since %s", st.Service, st.Replica, st.Started.Local().Format(time.DateTime))
		if st.Blocked {
			line = fmt.Sprintf("  %s %s: BLOCKED since %s: %s: %s", st.Service, st.Replica, st.Since.Local().Format(time.DateTime), st.Cause, st.Reason)
		}
		fmt.Fprintln(w, line)
	}
}
