package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/ingest"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/stages"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
	"github.com/flashpipe/flashpipe/processor"
	"github.com/flashpipe/flashpipe/sequencer"
	"github.com/flashpipe/flashpipe/sink"
)

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		defer ln.Close()
	}
	return ports
}

// startCluster starts a 3-node NATS cluster of embedded servers on loopback.
func startCluster(t *testing.T) ([]*natsx.Embedded, string) {
	t.Helper()
	routes := freePorts(t, 3)
	var urls []string
	for _, p := range routes {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	nodes := make([]*natsx.Embedded, 3)
	started := make(chan error, 3)
	for i := range nodes {
		go func() {
			srv, err := natsx.StartEmbedded(natsx.EmbeddedConfig{
				StoreDir: t.TempDir(), ServerName: fmt.Sprintf("n%d", i+1),
				Cluster: &natsx.ClusterConfig{Name: "flashpipe-test", Port: routes[i], Routes: urls},
			})
			nodes[i] = srv
			started <- err
		}()
	}
	for range nodes {
		if err := <-started; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Shutdown()
		}
	})
	var clients []string
	for _, n := range nodes {
		clients = append(clients, n.ClientURL())
	}
	return nodes, strings.Join(clients, ",")
}

// A 3-node cluster with every stream and bucket at 3 replicas: one node dies mid-batch
// and the batch completes with every promise kept.
func TestClusterSurvivesANodeLoss(t *testing.T) {
	t.Parallel()
	nodes, url := startCluster(t)
	_, js := natstest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := natsx.WaitJetStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	c := natstest.ContractWith(t, js, contract.Config{Replicas: 3})

	sim, err := llmsim.New(llmsim.Config{LatencyJitter: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	simURL, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	api, _ := llm.New(llm.Config{BaseURL: simURL, APIKey: "k"})
	store, err := postgres.Open(context.Background(), pgtest.URL(t), postgres.Config{AutoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	p := &pipeline{t: t, js: js, c: c, sim: sim, api: api, store: store, stages: stages.DefaultConfig()}
	if p.cache, err = cache.New(ctx, js, c, cache.Config{}); err != nil {
		t.Fatal(err)
	}
	if p.pub, err = ingest.NewPublisher(js, c, nil); err != nil {
		t.Fatal(err)
	}
	// Each service on its own connection to the whole cluster.
	conn := func() *pipeline {
		_, sjs := natstest.Connect(t, url)
		q := *p
		q.js = sjs
		return &q
	}
	conn().startProcessor(processor.Config{ConcurrentMax: 20, AckWait: 5 * time.Second})
	conn().startSequencer(sequencer.Config{LeaseTTL: 3 * time.Second, PollInterval: 200 * time.Millisecond})
	// Deliveries in flight from a node that dies are redelivered after the ack wait:
	// keep it short so the test measures recovery, not the default wait.
	conn().startSink(sink.Config{AckWait: 5 * time.Second})

	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:300]
	p.submit("cluster", items)
	natstest.Eventually(t, time.Minute, func() bool {
		st, err := store.Batch(context.Background(), "cluster")
		return err == nil && st.Done >= 60
	}, "no progress before the node loss")
	nodes[0].Shutdown()

	st := p.waitStored("cluster", 2*time.Minute)
	if st.OK != len(items) || st.Failed != 0 {
		t.Fatalf("status %+v", st)
	}
	checkStored(t, p.results("cluster"), items, 3)
	checkOrdered(t, p.orderedKeys("cluster"), items)
	if s := sim.Stats(); s.Stage1Calls > int64(len(items))+20 || s.Stage2Calls > int64(len(items))+20 {
		t.Fatalf("%d stage 1 and %d stage 2 calls for %d items: answers were paid twice", s.Stage1Calls, s.Stage2Calls, len(items))
	}
}
