package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
	"github.com/flashpipe/flashpipe/internal/testutil/tcpproxy"
)

// Settings of the services under test: short timeouts so that recovery is fast.
const (
	// processorWorkers is the processor's --workers: the items one replica works on
	// at once, so the API calls it can have in flight at any instant.
	processorWorkers = 4
	// processorConcurrentMax is --concurrent-max, the consumer's MaxAckPending. It is
	// well above what one replica holds (its workers plus its prefetch), so a
	// restarted processor is handed fresh items at once instead of waiting for the
	// dead one's to time out.
	processorConcurrentMax = 32
	ackWait                = 3 * time.Second // processor --ack-wait
	// claimTTL is the processor's --cache-claim-ttl: a killed processor's claim on an
	// answer it was paying for lapses before its item comes back (ack wait), so the
	// restarted one does not wait for it (with the default, 30 s).
	claimTTL    = 2 * time.Second
	leaseTTL    = 2 * time.Second // sequencer --sequencer-lease-ttl
	sinkAckWait = 3 * time.Second // sink --sink-ack-wait
	// simJitter is the simulator's random latency per call on top of each scenario's
	// fixed latency, so items finish out of order and are in flight at any moment.
	simJitter = 5 * time.Millisecond

	batchID = "chaos"
)

// envConfig shapes one scenario's environment.
type envConfig struct {
	// latency is the simulator's fixed latency per call: it paces the batch.
	latency time.Duration
	// proxyPG puts a TCP proxy between the sink and PostgreSQL.
	proxyPG bool
	// proxyNATS puts a TCP proxy between the processor and NATS.
	proxyNATS bool
	// workers is the processor's --workers (0: processorWorkers).
	workers int
}

// env is the world of one scenario: its own NATS server (on a fixed port and store
// directory, so it can be restarted), its own prefix, simulator and Postgres schema,
// and the three services as child processes.
type env struct {
	t   *testing.T
	cfg envConfig

	natsPort int
	natsDir  string
	natsLog  *slog.Logger
	nats     *natsx.Embedded

	nc     *nats.Conn
	js     jetstream.JetStream
	c      *contract.Contract
	prefix string

	sim    *llmsim.Simulator
	simURL string

	dbURL     string          // the test's own, direct connections
	proxy     *tcpproxy.Proxy // between the sink and PostgreSQL
	natsProxy *tcpproxy.Proxy // between the processor and NATS
	pool      *pgxpool.Pool
	store     *postgres.Store

	processor, sequencer, sink *service

	// batches are the scenario's batches; items all their items, in that order.
	batches []chaosBatch
	items   []flashpipe.Item
	// submitted, lastFault and completed time the batch: submitted, the last fault
	// over (process restarted, server or path back), stored complete.
	submitted, lastFault, completed time.Time
}

func newEnv(t *testing.T, cfg envConfig) *env {
	t.Helper()
	e := &env{t: t, cfg: cfg}
	dir := t.TempDir()

	// NATS, on a port of its own that stays the same across restarts.
	e.natsDir = filepath.Join(dir, "nats")
	e.natsPort = freePort(t)
	logFile, err := os.Create(filepath.Join(dir, "nats-server.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = logFile.Close() })
	e.natsLog = slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.startNATS()
	t.Cleanup(func() { e.nats.Shutdown() })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- nats-server: last lines of its log\n%s", tailFile(logFile.Name(), 20))
		}
		keepLog(t, e.prefix, logFile.Name())
	})
	e.nc, err = natsx.Connect(e.natsURL(), "chaos-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	if e.js, err = natsx.JetStream(e.nc); err != nil {
		t.Fatal(err)
	}
	e.prefix = natstest.UniquePrefix(t)
	if e.c, err = contract.New(contract.Config{Prefix: e.prefix}); err != nil {
		t.Fatal(err)
	}

	// The API simulator, in this process so its counters can be read.
	e.sim, err = llmsim.New(llmsim.Config{Latency: cfg.latency, LatencyJitter: simJitter, Seed: time.Now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	if e.simURL, err = e.sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.sim.Close() })

	// PostgreSQL: a schema of this test's own; the sink reaches it directly or
	// through the proxy.
	e.dbURL = pgtest.URL(t)
	sinkURL := e.dbURL
	if cfg.proxyPG {
		u, err := url.Parse(e.dbURL)
		if err != nil {
			t.Fatalf("parse the test database URL: %v", err)
		}
		e.proxy = tcpproxy.Start(t, u.Host)
		u.Host = e.proxy.Addr()
		sinkURL = u.String()
	}

	env := childEnv()
	common := []string{"--nats-url", e.natsURL(), "--prefix", e.prefix}
	procNATS := e.natsURL()
	if cfg.proxyNATS {
		e.natsProxy = tcpproxy.Start(t, fmt.Sprintf("127.0.0.1:%d", e.natsPort))
		procNATS = "nats://" + e.natsProxy.Addr()
	}
	if cfg.workers == 0 {
		e.cfg.workers = processorWorkers
	}
	e.processor = newService(t, e.prefix, "processor", env, "processor", "--nats-url", procNATS, "--prefix", e.prefix,
		"--api-base-url", e.simURL,
		"--workers", strconv.Itoa(e.cfg.workers),
		"--concurrent-max", strconv.Itoa(processorConcurrentMax),
		"--ack-wait", ackWait.String(),
		"--cache-claim-ttl", claimTTL.String(),
		// The simulator sets no request limit and these scenarios test no rate limit:
		// without this the processor would pace itself at its default for real APIs.
		"--rate-limit-rpm", "0")
	// Debug: the scenarios wait for the per-batch "sequencing batch" line.
	e.sequencer = newService(t, e.prefix, "sequencer", env, append([]string{"--log-level", "debug", "sequencer"}, append(common,
		"--sequencer-lease-ttl", leaseTTL.String())...)...)
	sinkArgs := append([]string{"sink"}, append(common, "--postgres-url", sinkURL, "--auto-migrate",
		"--sink-ack-wait", sinkAckWait.String())...)
	e.sink = newService(t, e.prefix, "sink", env, sinkArgs...)
	return e
}

func (e *env) natsURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", e.natsPort) }

// startNATS starts the embedded server on the scenario's port and store directory,
// retrying while the port is still held by the server just stopped.
func (e *env) startNATS() {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		srv, err := natsx.StartEmbedded(natsx.EmbeddedConfig{
			StoreDir: e.natsDir, Port: e.natsPort, ServerName: "chaos", Logger: e.natsLog})
		if err == nil {
			e.nats = srv
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("start NATS on port %d: %v", e.natsPort, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startServices starts the three services and waits until each is ready, then opens
// the test's connections to the database the sink has migrated.
func (e *env) startServices() {
	e.t.Helper()
	for _, s := range []*service{e.sink, e.sequencer, e.processor} {
		s.start()
	}
	e.sink.waitLog(`"msg":"sink started"`, time.Minute)
	e.sequencer.waitLog(`"msg":"sequencer started"`, time.Minute)
	e.processor.waitLog(`"msg":"processor started"`, time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if e.store, err = postgres.Open(ctx, e.dbURL, postgres.Config{}); err != nil {
		e.t.Fatalf("open the store the sink migrated: %v", err)
	}
	e.t.Cleanup(func() { _ = e.store.Close() })
	if e.pool, err = pgxpool.New(ctx, e.dbURL); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(e.pool.Close)
}

// chaosBatch is one batch of a scenario.
type chaosBatch struct {
	id, tenant string
	priority   int
	items      []flashpipe.Item
}

// submit publishes the batch in this process.
func (e *env) submit(items []flashpipe.Item) {
	e.submitBatches(chaosBatch{id: batchID, items: items})
}

// submitBatches publishes batches in this process, one after another.
func (e *env) submitBatches(batches ...chaosBatch) {
	e.t.Helper()
	e.batches = batches
	e.items = nil
	pub, err := ingest.NewPublisher(e.js, e.c, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, b := range batches {
		e.items = append(e.items, b.items...)
		sub, err := pub.Submit(ctx, ingest.Batch{ID: b.id, Source: "chaos", Tenant: b.tenant, Priority: b.priority,
			Items: ingest.SliceItems(b.items)})
		if err != nil {
			e.t.Fatalf("submit %s: %v", b.id, err)
		}
		if sub.Published != len(b.items) {
			e.t.Fatalf("submit %s published %d items, want %d", b.id, sub.Published, len(b.items))
		}
	}
	e.submitted = time.Now()
}

// faultOver records the end of a fault.
func (e *env) faultOver(at time.Time) {
	if at.After(e.lastFault) {
		e.lastFault = at
	}
}

// checkAlive fails the test for any service that exited on its own.
func (e *env) checkAlive() {
	e.t.Helper()
	for _, s := range []*service{e.processor, e.sequencer, e.sink} {
		s.checkAlive()
	}
}

// Progress counters. Each returns an error while its source cannot be read (NATS
// restarting), which the waiting loops treat as "not yet".

// results counts the distinct results stored in the results stream (a duplicate
// publish is de-duplicated by its Nats-Msg-Id and not counted).
func (e *env) results() (int, error) { return e.streamMsgs(e.c.ResultsStream()) }

// ordered counts the events of the ordered stream (the batch's only subject).
func (e *env) ordered() (int, error) { return e.streamMsgs(e.c.OrderedStream()) }

func (e *env) streamMsgs(name string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := e.js.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	return int(st.CachedInfo().State.Msgs), nil
}

// stored counts the item rows of the scenario's batches in the database.
func (e *env) stored() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ids := make([]string, len(e.batches))
	for i, b := range e.batches {
		ids[i] = b.id
	}
	var n int
	err := e.pool.QueryRow(ctx, `SELECT count(*) FROM items WHERE batch_id = ANY($1)`, ids).Scan(&n)
	return n, err
}

// progressString describes where the batch stands, for failure messages.
func (e *env) progressString() string {
	r, rerr := e.results()
	o, oerr := e.ordered()
	s, serr := e.stored()
	return fmt.Sprintf("results %d (%v), ordered events %d (%v), stored rows %d (%v) of %d items",
		r, rerr, o, oerr, s, serr, len(e.items))
}

// waitComplete waits until the store holds every batch of the scenario complete, and
// returns their statuses, in the scenario's order.
func (e *env) waitComplete(within time.Duration) []flashpipe.BatchStatus {
	e.t.Helper()
	out := make([]flashpipe.BatchStatus, len(e.batches))
	deadline := time.Now().Add(within)
	for i := 0; i < len(e.batches); {
		id := e.batches[i].id
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := e.store.Batch(ctx, id)
		cancel()
		if err == nil && st.State == flashpipe.BatchComplete {
			out[i] = st
			i++
			continue
		}
		if err != nil && !errors.Is(err, flashpipe.ErrNotFound) {
			e.t.Logf("read batch status: %v", err)
		}
		if time.Now().After(deadline) {
			e.checkAlive()
			e.t.Fatalf("batch %s not stored complete within %s: status %+v; %s", id, within, st, e.progressString())
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.completed = time.Now()
	return out
}

// completionDeadline bounds how long a scenario may take to finish its batch after
// its faults: the slowest redelivery plus the batch's own time.
func completionDeadline() time.Duration {
	return 2 * time.Minute
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
