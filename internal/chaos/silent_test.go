package chaos

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
)

// silentLink is how long the path between the processor and NATS stays silent: longer
// than twice the heartbeat of the processor's pull requests (nats.go's default: half of
// its 30 s pull expiry, 15 s), after which nats.go reports missed heartbeats.
const silentLink = 35 * time.Second

// silentLatency is the simulator's latency in this scenario (its batch is small).
const silentLatency = 15 * time.Millisecond

// A silent network path between an idle processor and NATS: no connection breaks,
// nothing gets through, for silentLink; then the path heals and a batch is submitted.
// The processor must take it. It runs with --workers 1, the strictly sequential mode
// (CONCURRENT_MAX=1), where one worker is the whole replica.
//
// This suite found the bug it guards against: processor.Run's workers used to return
// on any error of MessagesContext.Next, and nats.go returns ErrNoHeartbeat there after
// two missed heartbeats (30 s of silence), so each such silence ended one worker for
// good; with --workers 1 the processor logged "fetch items ... no heartbeat received",
// then "processor stopped", and exited 0 (fixed by consuming through Consume).
func runNATSSilentLink(t *testing.T, _ *rand.Rand, all []flashpipe.Item) outcome {
	items := all[:50]
	e := newEnv(t, envConfig{latency: silentLatency, proxyNATS: true, workers: 1})
	e.startServices()

	at := time.Now()
	e.natsProxy.Blackhole()
	// The fault itself: a silent path for silentLink, watched for the processor
	// giving up in the meantime.
	for time.Since(at) < silentLink {
		time.Sleep(100 * time.Millisecond)
		e.processor.failIfExited()
	}
	e.natsProxy.Unblock()
	up := time.Now()
	e.faultOver(up)

	e.submit(items)
	var r int
	waitFor(t, time.Minute, func() bool {
		e.processor.failIfExited()
		var err error
		r, err = e.results()
		return err == nil && r > 0
	}, "the processor to take the batch after the path healed (%d results); %s", r, e.progressString())
	o := outcome{env: e, items: len(items), faults: 1, recoveryBound: time.Minute, recovery: []time.Duration{time.Since(up)}}
	o.tally, o.calls = e.checkPromises(1)
	return o
}
