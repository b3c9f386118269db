//go:build chaos

package chaos

import "time"

// The long form (go test -tags chaos): three trials per scenario, 1,000-item batches,
// many more kills and restarts, and a final table.
var params = suiteParams{
	long:   true,
	trials: 3,

	processorItems: 1000, processorKills: 15, processorLatency: 15 * time.Millisecond,
	sequencerItems: 1000, sequencerKills: 8, sequencerLatency: 100 * time.Millisecond,
	sinkItems: 1000, sinkKills: 12, sinkLatency: 15 * time.Millisecond,
	natsItems: 1000, natsRestarts: 4, natsLatency: 300 * time.Millisecond, natsDown: 12 * time.Second,
	pgItems: 1000, pgOutages: 2, pgLatency: 80 * time.Millisecond, pgOutage: 10 * time.Second,
	fairItems: 1000, fairKills: 15,
}
