package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"crypto/rand"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/permissions"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/ratelimit"
	"github.com/flashpipe/flashpipe/internal/secret"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/stages"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
	"github.com/flashpipe/flashpipe/internal/testutil/natsauth"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
)

// securePipeline is the whole pipeline with each part on a NATS connection of its
// own, made the way the commands make theirs (NATSFlags.connect), logging through the
// redacting handler the commands use into one buffer.
type securePipeline struct {
	t      *testing.T
	flags  map[string]NATSFlags
	red    *secret.Redactor
	logs   *natstest.SyncBuffer
	log    *slog.Logger
	apiKey string
	sim    *llmsim.Simulator
	store  flashpipe.Store
	pgURL  string
}

// newSecurePipeline makes the parts' flags with flagsFor(role), the simulator with
// sim (answering only apiKey) and a Postgres store of the test's own.
func newSecurePipeline(t *testing.T, sim llmsim.Config, apiKey string, flagsFor func(role string) NATSFlags) *securePipeline {
	t.Helper()
	s := &securePipeline{t: t, flags: map[string]NATSFlags{}, red: secret.New(apiKey), logs: &natstest.SyncBuffer{}, apiKey: apiKey}
	for _, role := range []string{permissions.Admin, permissions.Processor, permissions.Sequencer, permissions.Sink, permissions.Submit, permissions.Reader} {
		f := flagsFor(role)
		if err := f.AfterApply(s.red); err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		s.flags[role] = f
	}
	s.log = newLogger(s.logs, "debug", "json", s.red)
	var err error
	sim.RequireKey = apiKey
	if s.sim, err = llmsim.New(sim); err != nil {
		t.Fatal(err)
	}
	if _, err := s.sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.sim.Close() })
	s.pgURL = pgtest.URL(t)
	if s.store, err = postgres.Open(context.Background(), s.pgURL, postgres.Config{AutoMigrate: true, Logger: s.log}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.store.Close() })
	return s
}

// connect connects as role, closed when the test ends.
func (s *securePipeline) connect(role string) (jetstream.JetStream, *contract.Contract) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, js, c, err := s.flags[role].connect(ctx, "flashpipe-test-"+role, s.log.With("role", role))
	if err != nil {
		s.t.Fatalf("%s: %v", role, err)
	}
	s.t.Cleanup(nc.Close)
	return js, c
}

// setUp creates the streams and the KV buckets as the admin, as an operator does once
// with flashpipe streams apply.
// The rate limit bucket is left to the processor, which must be able to re-create it.
func (s *securePipeline) setUp() {
	s.t.Helper()
	ctx := context.Background()
	js, c := s.connect(permissions.Admin)
	changes, err := app.PlanResources(ctx, js, c, app.ResourceConfig{})
	if err != nil {
		s.t.Fatal(err)
	}
	if err := contract.Apply(ctx, js, changes); err != nil {
		s.t.Fatal(err)
	}
}

// startServices starts a processor (with the shared rate limit), a sequencer and a sink,
// each as its own user; stop stops them all.
func (s *securePipeline) startServices() (stop func()) {
	s.t.Helper()
	ctx := context.Background()
	jsP, c := s.connect(permissions.Processor)
	proc, err := app.NewProcessor(ctx, app.Deps{JS: jsP, Contract: c, Replica: "p1", Logger: s.log.With("service", "processor")}, app.ProcessorConfig{
		API: llm.Config{BaseURL: s.sim.URL(), APIKey: s.apiKey}, Stages: stages.DefaultConfig(),
		Processor: processor.Config{Redactor: s.red, MaxAttempts: 2}, RateLimit: ratelimit.Config{RPM: 60000},
	})
	if err != nil {
		s.t.Fatal(err)
	}
	jsQ, c := s.connect(permissions.Sequencer)
	seq, err := app.NewSequencer(ctx, app.Deps{JS: jsQ, Contract: c, Replica: "s1", Logger: s.log.With("service", "sequencer")}, app.SequencerConfig{})
	if err != nil {
		s.t.Fatal(err)
	}
	jsS, c := s.connect(permissions.Sink)
	snk, err := app.NewSink(ctx, app.Deps{JS: jsS, Contract: c, Logger: s.log.With("service", "sink")}, s.store, sink.Config{})
	if err != nil {
		s.t.Fatal(err)
	}
	stops := []func(){apptest.Run(s.t, proc), apptest.Run(s.t, seq), apptest.Run(s.t, snk)}
	return func() {
		for _, stop := range slices.Backward(stops) {
			stop()
		}
	}
}

// submit publishes the batch as the submit user and follows it to the end as the
// reader (batchlog, as submit --wait does), writing the TSV.
func (s *securePipeline) submitAndFollow(id string, items []flashpipe.Item, within time.Duration) *summary {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	jsW, c := s.connect(permissions.Submit)
	pub, err := ingest.NewPublisher(jsW, c, s.log)
	if err != nil {
		s.t.Fatal(err)
	}
	sub, err := pub.Submit(ctx, ingest.Batch{ID: id, Source: "test", Items: ingest.SliceItems(items)})
	if err != nil {
		s.t.Fatal(err)
	}
	jsR, c := s.connect(permissions.Reader)
	sum, err := followTo(ctx, jsR, c, sub.Manifest, filepath.Join(s.t.TempDir(), "cards.tsv"))
	if err != nil {
		s.t.Fatalf("follow batch %s: %v\nlogs:\n%s", id, err, s.logs)
	}
	return sum
}

// refusals returns the log lines of permissions NATS refused.
func (s *securePipeline) refusals() []string {
	var out []string
	for _, l := range strings.Split(s.logs.String(), "\n") {
		if strings.Contains(l, "permissions violation") || strings.Contains(l, "refused a permission") {
			out = append(out, l)
		}
	}
	return out
}

// leastPrivilegeServer starts a server whose users have exactly their role's
// permissions as conf renders them, and returns flags per role.
func leastPrivilegeServer(t *testing.T, conf string) func(role string) NATSFlags {
	t.Helper()
	c, err := contract.New(contract.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Random passwords: a secret holding a word ("sequencer") would have that word
	// redacted from every log line. Secrets come from crypto/rand, not nuid: the nuids
	// of one process share a prefix, and the services draw theirs (replica ids).
	var users []string
	passwords := map[string]string{}
	for _, r := range permissions.Roles(c) {
		passwords[r.Name] = rand.Text()
		users = append(users, fmt.Sprintf("{user: %s, password: %q, permissions: $%s}", r.Name, passwords[r.Name], permissions.Variable(c, r.Name)))
	}
	srv := natsauth.Start(t, conf+"\nauthorization { users = [\n"+strings.Join(users, "\n")+"\n] }\n")
	return func(role string) NATSFlags {
		return NATSFlags{NATSURL: srv.ClientURL(), NATSAuthFlags: NATSAuthFlags{User: role, Password: passwords[role]},
			StreamFlags: defaultStreamFlags()}
	}
}

func defaultStreamFlags() StreamFlags {
	return StreamFlags{Prefix: contract.DefaultPrefix, StreamReplicas: 1, StreamStorage: contract.StorageFile,
		StreamMaxAge: contract.DefaultMaxAge, DuplicateWindow: contract.DefaultDuplicateWindow}
}

// The whole pipeline runs a batch in order against a server that grants each service
// exactly the permissions of deploy/nats/permissions.conf, and NATS refuses nothing.
func TestLeastPrivilegePipeline(t *testing.T) {
	t.Parallel()
	conf, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", "permissions.conf"))
	if err != nil {
		t.Fatal(err)
	}
	s := newSecurePipeline(t, llmsim.Config{}, "sk-or-v1-"+rand.Text(), leastPrivilegeServer(t, string(conf)))
	s.setUp()
	stop := s.startServices()
	items := loadItems(t, "../../examples/test_5_words.csv")
	sum := s.submitAndFollow("least-privilege", items, 60*time.Second)
	if sum.Items != len(items) || sum.OK != len(items) || sum.Cards != 3*len(items) {
		t.Fatalf("summary %+v", sum)
	}
	st, err := app.WaitStored(context.Background(), s.store, "least-privilege", 0)
	if err != nil {
		t.Fatalf("not stored: %v (%+v)", err, st)
	}
	var rows []flashpipe.Result
	if err := s.store.Results(context.Background(), "least-privilege", flashpipe.ResultFilter{}, func(r flashpipe.Result) error {
		rows = append(rows, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	checkStored(t, rows, items, 3)

	// The other things the roles do: a dry run's estimate and a reprocess as the
	// submit user (followed to the end by the reader), a replay as the sink user.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	jsW, c := s.connect(permissions.Submit)
	answers, err := cache.Open(ctx, jsW, c, cache.Config{})
	if err != nil {
		t.Fatal(err)
	}
	est, err := processor.EstimateBatch(ctx, answers, stages.DefaultConfig(), ingest.SliceItems(items), processor.Prices{})
	if err != nil || !est.CacheUsed || est.Stage1Cached != len(items) || est.Stage2Cached != len(items) {
		t.Fatalf("dry run: %+v, %v", est, err)
	}
	pub, err := ingest.NewPublisher(jsW, c, s.log)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := pub.Reprocess(ctx, "least-privilege")
	if err != nil {
		t.Fatal(err)
	}
	jsR, c := s.connect(permissions.Reader)
	if sum, err := followTo(ctx, jsR, c, sub.Manifest, filepath.Join(t.TempDir(), "again.tsv")); err != nil || sum.OK != len(items) {
		t.Fatalf("reprocess: %+v, %v", sum, err)
	}
	jsS, c := s.connect(permissions.Sink)
	replay, err := sink.New(jsS, c, s.store, sink.Config{Logger: s.log})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := replay.Replay(ctx, "least-privilege"); err != nil || n == 0 {
		t.Fatalf("replay: %d events, %v", n, err)
	}
	stop()
	if r := s.refusals(); len(r) > 0 {
		t.Fatalf("NATS refused permissions the table does not grant:\n%s", strings.Join(r, "\n"))
	}
}

// Take one permission away and the service that needs it fails visibly: the error log
// names the subject, and the batch does not complete.
func TestMissingPermissionFailsVisibly(t *testing.T) {
	t.Parallel()
	c, err := contract.New(contract.Config{})
	if err != nil {
		t.Fatal(err)
	}
	roles := permissions.Roles(c)
	for i, r := range roles {
		if r.Name == permissions.Sequencer {
			roles[i].Publish = slices.DeleteFunc(slices.Clone(r.Publish), func(rule permissions.Rule) bool { return rule.Subject == c.Prefix()+".ordered.>" })
		}
	}
	s := newSecurePipeline(t, llmsim.Config{}, "sk-or-v1-"+rand.Text(), leastPrivilegeServer(t, permissions.RenderRoles(c, roles)))
	s.setUp()
	s.startServices()
	jsW, c := s.connect(permissions.Submit)
	pub, err := ingest.NewPublisher(jsW, c, s.log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Submit(context.Background(), ingest.Batch{ID: "refused", Items: ingest.SliceItems(loadItems(t, "../../examples/test_5_words.csv"))}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, func() bool {
		for _, l := range s.refusals() {
			if strings.Contains(l, `"level":"ERROR"`) && strings.Contains(l, "flashpipe.ordered.refused") {
				return true
			}
		}
		return false
	}, "no error log names the refused subject:\n%s", s.logs)
	if st, err := s.store.Batch(context.Background(), "refused"); err == nil && st.State == flashpipe.BatchComplete {
		t.Fatal("the batch completed without the sequencer's permission to append")
	}
}

// flagsOf maps connection options to the flags that give them.
func flagsOf(o natsx.ConnOptions) NATSFlags {
	return NATSFlags{NATSURL: o.URL, StreamFlags: defaultStreamFlags(), NATSAuthFlags: NATSAuthFlags{
		Context: o.Context, Creds: o.Creds, NKey: o.NKey, User: o.User, Password: o.Password, Token: o.Token,
		TLSCert: o.TLSCert, TLSKey: o.TLSKey, TLSCA: o.TLSCA, TLSFirst: o.TLSFirst, InboxPrefix: o.InboxPrefix,
	}}
}

// Every way of authenticating connects the whole pipeline through the commands' own
// flags: a batch goes through processor, sequencer and sink, submitted and followed.
func TestEveryAuthMethodRunsThePipeline(t *testing.T) {
	t.Parallel()
	for _, m := range natsauth.All(t) {
		t.Run(m.Name, func(t *testing.T) {
			t.Parallel()
			s := newSecurePipeline(t, llmsim.Config{}, "sk-or-v1-"+rand.Text(), func(string) NATSFlags { return flagsOf(m.Good) })
			s.setUp()
			defer s.startServices()()
			items := loadItems(t, "../../examples/test_5_words.csv")
			if sum := s.submitAndFollow("auth-"+m.Name, items, 60*time.Second); sum.OK != len(items) || sum.Cards != 3*len(items) {
				t.Fatalf("summary %+v", sum)
			}
		})
	}
}

// A batch runs with an API that echoes fragments of the key in its errors, over NATS
// with a token (in the URL for some services, as a flag for others); afterwards no
// 8-byte piece of the key or of the token is in the logs, in any message of the four
// streams, in any KV bucket or in any database row.
func TestNoSecretFragmentAnywhereAfterKeyEchoes(t *testing.T) {
	t.Parallel()
	m := natsauth.Token(t)
	inURL := strings.Replace(m.Good.URL, "://", "://"+m.Good.Token+"@", 1)
	key := "sk-or-v1-" + rand.Text() + rand.Text()
	s := newSecurePipeline(t, llmsim.Config{Seed: 5, Faults: llmsim.Faults{RateEchoKey: 0.3}}, key, func(role string) NATSFlags {
		if role == permissions.Processor || role == permissions.Submit {
			return flagsOf(natsx.ConnOptions{URL: inURL})
		}
		return flagsOf(m.Good)
	})
	s.setUp()
	stop := s.startServices()
	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:40]
	sum := s.submitAndFollow("echo", items, 60*time.Second)
	stop()
	if sum.Failed == 0 || s.sim.Stats().Faults[llmsim.FaultEchoKey] == 0 {
		t.Fatalf("the fault did not fail any item (summary %+v, faults %v)", sum, s.sim.Stats().Faults)
	}
	if !strings.Contains(s.logs.String(), secret.Mask) {
		t.Fatal("nothing was redacted from the logs: the echo did not reach them")
	}

	scan := newFragmentScan(key, m.Good.Token)
	scan.check(t, "logs", s.logs.String())
	ctx := context.Background()
	js, c := s.connect(permissions.Admin)
	names := []string{c.BatchesStream(), c.ItemsStream(), c.ResultsStream(), c.OrderedStream()}
	lister := js.StreamNames(ctx)
	for name := range lister.Name() {
		if strings.HasPrefix(name, "KV_") {
			names = append(names, name)
		}
	}
	if len(names) < 8 {
		t.Fatalf("streams and buckets %v: some are missing", names)
	}
	for _, name := range names {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		for seq := uint64(1); seq <= st.CachedInfo().State.LastSeq; seq++ {
			raw, err := st.GetMsg(ctx, seq)
			if err != nil {
				continue // deleted or expired
			}
			scan.check(t, fmt.Sprintf("%s message %d", name, seq), raw.Subject+fmt.Sprint(raw.Header)+string(raw.Data))
		}
	}
	conn, err := pgx.Connect(ctx, s.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || !slices.Contains(tables, "items") {
		t.Fatalf("tables %v, %v", tables, err)
	}
	reasons := 0
	for _, table := range tables {
		rows, err := conn.Query(ctx, `SELECT row_to_json(t)::text FROM `+pgx.Identifier{table}.Sanitize()+` t`)
		if err != nil {
			t.Fatal(err)
		}
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for i, text := range texts {
			scan.check(t, fmt.Sprintf("table %s row %d", table, i), text)
			if table == "items" && strings.Contains(text, secret.Mask) {
				reasons++
			}
		}
	}
	if reasons == 0 {
		t.Fatal("no stored failure reason shows a redaction: the echo never reached the database")
	}
}

// fragmentScan finds any MinFragment-byte piece of the secrets in a text.
type fragmentScan struct{ pieces []string }

func newFragmentScan(secrets ...string) *fragmentScan {
	f := &fragmentScan{}
	for _, s := range secrets {
		for i := 0; i+secret.MinFragment <= len(s); i++ {
			f.pieces = append(f.pieces, s[i:i+secret.MinFragment])
		}
	}
	return f
}

func (f *fragmentScan) check(t *testing.T, where, text string) {
	t.Helper()
	for _, p := range f.pieces {
		if i := strings.Index(text, p); i >= 0 {
			t.Fatalf("%s holds %q of a secret: ...%s...", where, p, text[max(0, i-80):min(len(text), i+80)])
		}
	}
}

// followTo follows a batch to completion as submit --wait does, writing its TSV to path.
func followTo(ctx context.Context, js jetstream.JetStream, c *contract.Contract, m flashpipe.Manifest, path string) (*summary, error) {
	client, err := app.NewClient(js, c, app.ClientConfig{})
	if err != nil {
		return nil, err
	}
	return client.FollowTo(ctx, m, &app.Output{Path: path}, nil)
}
