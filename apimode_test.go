package flashpipe_test

import (
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
)

// An api_mode setting other than sync or batch is refused by the manifest check every
// door makes (and the scheduler makes of a manifest published over NATS).
func TestManifestAPIMode(t *testing.T) {
	m := flashpipe.Manifest{BatchID: "b", Count: 3, Source: "t", ContentHash: "h", CreatedAt: time.Now()}
	for mode, ok := range map[string]bool{"": true, "sync": true, "batch": true, "fast": false, "BATCH": false} {
		m.Settings = map[string]string{flashpipe.SettingAPIMode: mode}
		err := m.Validate()
		if ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), "api_mode")) {
			t.Errorf("api_mode %q: Validate() = %v", mode, err)
		}
	}
}
