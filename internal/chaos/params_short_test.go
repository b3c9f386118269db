//go:build !chaos

package chaos

import "time"

// The short form, run by the default `go test ./...`: one trial per scenario, small
// batches, five kills of each service, two NATS restarts, one Postgres outage.
var params = suiteParams{
	long:   false,
	trials: 1,

	processorItems: 300, processorKills: 5, processorLatency: 15 * time.Millisecond,
	sequencerItems: 900, sequencerKills: 5, sequencerLatency: 60 * time.Millisecond,
	sinkItems: 300, sinkKills: 5, sinkLatency: 15 * time.Millisecond,
	natsItems: 400, natsRestarts: 2, natsLatency: 100 * time.Millisecond, natsDown: 1500 * time.Millisecond,
	pgItems: 300, pgOutages: 1, pgLatency: 15 * time.Millisecond, pgOutage: 10 * time.Second,
	fairItems: 300, fairKills: 5,
}
