package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/testutil/freeport"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

func freePorts(t *testing.T, n int) []int { return freeport.List(t, n) }

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
	p := newPipelineWith(t, apptest.Config{URL: url, Contract: contract.Config{Replicas: 3},
		Sim: llmsim.Config{LatencyJitter: 10 * time.Millisecond}})
	// Each service on its own connection to the whole cluster.
	p.startProcessor(processor.Config{ConcurrentMax: 20, AckWait: 5 * time.Second})
	p.startSequencer(sequencer.Config{LeaseTTL: 3 * time.Second, PollInterval: 200 * time.Millisecond})
	// Deliveries in flight from a node that dies are redelivered after the ack wait:
	// keep it short so the test measures recovery, not the default wait.
	p.startSink(sink.Config{AckWait: 5 * time.Second})

	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:300]
	p.submit("cluster", items)
	natstest.Eventually(t, time.Minute, func() bool {
		st, err := p.store.Batch(context.Background(), "cluster")
		return err == nil && st.Done >= 60
	}, "no progress before the node loss")
	nodes[0].Shutdown()

	st := p.waitStored("cluster", 2*time.Minute)
	if st.OK != len(items) || st.Failed != 0 {
		t.Fatalf("status %+v", st)
	}
	checkStored(t, p.results("cluster"), items, 3)
	checkOrdered(t, p.orderedKeys("cluster"), items)
	if s := p.sim.Stats(); s.Stage1Calls > int64(len(items))+20 || s.Stage2Calls > int64(len(items))+20 {
		t.Fatalf("%d stage 1 and %d stage 2 calls for %d items: answers were paid twice", s.Stage1Calls, s.Stage2Calls, len(items))
	}
}
